#include "op_checks.h"

#include <stdexcept>

namespace tern::ops::checks {

void fail(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string("op ") + op + ": " + what);
}

Backend& backend_of(const char* op, std::initializer_list<P> tensors) {
  const Device dev = tensors.begin()->second->device();
  for (auto [name, t] : tensors)
    if (!(t->device() == dev))
      fail(op, std::string(name) + " is on " + device_name(t->device()) + ", " +
                   tensors.begin()->first + " on " + device_name(dev));
  if (dev.on_gpu() && !compute::cuda_module_built())
    fail(op, "tensors on " + device_name(dev) + ", and this build has only the CPU backend");
  return compute::backend_for(dev);
}

DType expect_float(const char* op, const char* name, const Tensor& t, const Backend& be) {
  const bool bf16 = be.supports_bf16();
  if (t.dtype() == DType::f32 || (bf16 && t.dtype() == DType::bf16)) return t.dtype();
  fail(op, std::string(name) + " must be f32" + (bf16 ? " or bf16" : "") + ", got " +
               dtype_name(t.dtype()) + (t.dtype() == DType::bf16 ? " (bf16 needs the GPU)" : ""));
}

DType expect_compute(const char* op, const Backend& be, std::initializer_list<P> tensors) {
  const DType t = expect_float(op, tensors.begin()->first, *tensors.begin()->second, be);
  for (auto [name, x] : tensors) expect_dtype(op, name, *x, t);
  return t;
}

void expect_f32(const char* op, const char* name, const Tensor& t) {
  if (t.dtype() != DType::f32)
    fail(op, std::string(name) + " must be f32, got " + dtype_name(t.dtype()));
}

void expect_dtype(const char* op, const char* name, const Tensor& t, DType want) {
  if (t.dtype() != want)
    fail(op, std::string(name) + " must be " + dtype_name(want) + ", got " + dtype_name(t.dtype()));
}

void expect_shape(const char* op, const char* name, const Tensor& t, const Shape& want) {
  if (t.shape() != want)
    fail(op, std::string(name) + " has shape " + shape_str(t.shape()) + ", expected " +
                 shape_str(want));
}

void expect_2d(const char* op, const char* name, const Tensor& t) {
  if (t.ndim() != 2) fail(op, std::string(name) + " must be 2-D, got " + shape_str(t.shape()));
}

void expect_4d(const char* op, const char* name, const Tensor& t) {
  if (t.ndim() != 4) fail(op, std::string(name) + " must be 4-D, got " + shape_str(t.shape()));
}

void expect_same(const char* op, const Tensor& a, const Tensor& b) {
  if (a.numel() != b.numel())
    fail(op, "size mismatch " + shape_str(a.shape()) + " vs " + shape_str(b.shape()));
}

void expect_segments(const char* op, const std::vector<ParamSegment>& segments, int64_t n) {
  for (const auto& s : segments)
    if (s.offset < 0 || s.count < 0 || s.offset + s.count > n)
      fail(op, "segment [" + std::to_string(s.offset) + ", +" + std::to_string(s.count) +
                   ") outside a buffer of " + std::to_string(n));
}

}  // namespace tern::ops::checks

namespace tern::compute {

Backend& backend_for(Device device) { return device.on_gpu() ? *cuda_module().ops : cpu_backend(); }

}  // namespace tern::compute
