#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tern {

enum class DType : uint8_t { f32, bf16, i32, i64, u8 };
// Inline: the CUDA backend library uses them and links nothing of tern.
inline size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::f32:
      return 4;
    case DType::bf16:
      return 2;
    case DType::i32:
      return 4;
    case DType::i64:
      return 8;
    case DType::u8:
      return 1;
  }
  return 0;
}

inline const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::f32:
      return "f32";
    case DType::bf16:
      return "bf16";
    case DType::i32:
      return "i32";
    case DType::i64:
      return "i64";
    case DType::u8:
      return "u8";
  }
  return "?";
}

enum class DeviceKind : uint8_t { cpu, cuda };
struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;
  bool operator==(const Device&) const = default;
  bool on_gpu() const { return kind == DeviceKind::cuda; }
};
std::string device_name(Device d);

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::f32;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::i32;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::i64;
}
template <>
constexpr DType dtype_of<uint8_t>() {
  return DType::u8;
}

// A typed view of memory. Owning tensors share their storage; views made by slice()/reshape()
// keep it alive. No autograd: layers call ops explicitly.
class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(Shape shape, DType dt = DType::f32, Device dev = {});
  static Tensor zeros(Shape shape, DType dt = DType::f32, Device dev = {});
  // Wraps memory the caller owns and keeps alive.
  static Tensor wrap(void* data, Shape shape, DType dt, Device dev = {});
  // Takes shared ownership of host memory (with its own deleter).
  static Tensor wrap_shared(std::shared_ptr<void> storage, Shape shape, DType dt);

  bool defined() const { return ptr_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return numel() * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  void* raw() const { return ptr_; }

  template <class T>
  T* data() const {
    check_dtype(dtype_of<T>());
    return static_cast<T*>(ptr_);
  }

  // A view of `shape` starting `offset` elements into this tensor's memory.
  Tensor slice(int64_t offset, Shape shape) const;
  // The first `rows` rows of a tensor whose first dimension is the batch.
  Tensor rows(int64_t begin, int64_t count) const;
  Tensor reshape(Shape shape) const;
  void zero_();
  bool on_cuda() const { return device_.kind == DeviceKind::cuda; }
  // A copy on `dev`, or this tensor when it is already there.
  Tensor to(Device dev) const;
  // Copies src's elements (same dtype and count) from any device; complete on return when this
  // tensor is on the host.
  void copy_from(const Tensor& src);

 private:
  void check_dtype(DType want) const;
  std::shared_ptr<void> storage_;
  void* ptr_ = nullptr;
  Shape shape_{0};  // a default tensor is empty, not a scalar
  DType dtype_ = DType::f32;
  Device device_;
};

}  // namespace tern

namespace tern {
// Device memory (src/device.cpp; CUDA builds). Copies to the host are complete on return; copies
// to the GPU are queued on its compute stream.
std::shared_ptr<void> device_allocate(size_t bytes, Device dev);
void device_memset_zero(void* p, size_t bytes, Device dev);
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);

// XXH3-64 of the tensor's bytes (copied to the host first when on a GPU) as 16 hex digits: the run
// log's param_checksum.
std::string content_checksum(const Tensor& t);
}  // namespace tern
