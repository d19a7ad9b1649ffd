#pragma once
// Every CUDA, cuBLAS and NCCL call goes through one of these macros: a failure throws
// std::runtime_error naming the call, the file and line, and the library's own message.
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace tern::cuda {

[[noreturn]] inline void throw_cuda_error(const char* library, const char* call, const char* file,
                                          int line, const std::string& message) {
  throw std::runtime_error(std::string(library) + " error at " + file + ":" + std::to_string(line) +
                           ": " + call + ": " + message);
}

}  // namespace tern::cuda

#define TERN_CUDA_CHECK(call)                                                                     \
  do {                                                                                            \
    cudaError_t tern_err_ = (call);                                                               \
    if (tern_err_ != cudaSuccess)                                                                 \
      ::tern::cuda::throw_cuda_error(                                                             \
          "CUDA", #call, __FILE__, __LINE__,                                                      \
          std::string(cudaGetErrorName(tern_err_)) + " (" + cudaGetErrorString(tern_err_) + ")"); \
  } while (0)

// After a kernel launch: launch-configuration errors show up here, not at the launch.
#define TERN_CUDA_CHECK_LAUNCH(kernel_name)                                                       \
  do {                                                                                            \
    cudaError_t tern_err_ = cudaPeekAtLastError();                                                \
    if (tern_err_ != cudaSuccess)                                                                 \
      ::tern::cuda::throw_cuda_error(                                                             \
          "CUDA", "launch of " kernel_name, __FILE__, __LINE__,                                   \
          std::string(cudaGetErrorName(tern_err_)) + " (" + cudaGetErrorString(tern_err_) + ")"); \
  } while (0)

#define TERN_CUBLAS_CHECK(call)                                                          \
  do {                                                                                   \
    cublasStatus_t tern_st_ = (call);                                                    \
    if (tern_st_ != CUBLAS_STATUS_SUCCESS)                                               \
      ::tern::cuda::throw_cuda_error("cuBLAS", #call, __FILE__, __LINE__,                \
                                     std::string(cublasGetStatusName(tern_st_)) + " (" + \
                                         cublasGetStatusString(tern_st_) + ")");         \
  } while (0)
