#include "tern/compute/tensor.h"

#include <cstdlib>
#include <cstring>
#include <numeric>
#include <stdexcept>

namespace tern {

std::string device_name(Device d) {
  return d.kind == DeviceKind::cpu ? "cpu" : "cuda:" + std::to_string(d.index);
}

int64_t shape_numel(const Shape& s) {
  return std::accumulate(s.begin(), s.end(), int64_t{1}, std::multiplies<>());
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// 64-byte alignment: a cache line on the CPU, and enough for 16-byte vector loads everywhere.
constexpr size_t kAlign = 64;

Tensor Tensor::empty(Shape shape, DType dt, Device dev) {
  for (int64_t d : shape)
    if (d < 0)
      throw std::invalid_argument("Tensor::empty: negative dimension in " + shape_str(shape));
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dt;
  t.device_ = dev;
  if (dev.kind == DeviceKind::cuda) {
    t.storage_ = device_allocate(t.nbytes(), dev);
    t.ptr_ = t.storage_.get();
    return t;
  }
  size_t bytes = (t.nbytes() + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, bytes == 0 ? kAlign : bytes);
  if (!p) throw std::bad_alloc();
  t.storage_ = std::shared_ptr<void>(p, std::free);
  t.ptr_ = p;
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dt, Device dev) {
  Tensor t = empty(std::move(shape), dt, dev);
  t.zero_();
  return t;
}

Tensor Tensor::wrap(void* data, Shape shape, DType dt, Device dev) {
  Tensor t;
  t.ptr_ = data;
  t.shape_ = std::move(shape);
  t.dtype_ = dt;
  t.device_ = dev;
  return t;
}

Tensor Tensor::wrap_shared(std::shared_ptr<void> storage, Shape shape, DType dt) {
  Tensor t;
  t.ptr_ = storage.get();
  t.storage_ = std::move(storage);
  t.shape_ = std::move(shape);
  t.dtype_ = dt;
  return t;
}

Tensor Tensor::slice(int64_t offset, Shape shape) const {
  if (offset < 0 || offset + shape_numel(shape) > numel())
    throw std::out_of_range("Tensor::slice: " + std::to_string(offset) + " + " + shape_str(shape) +
                            " exceeds " + shape_str(shape_));
  Tensor t = *this;
  t.ptr_ = static_cast<char*>(ptr_) + offset * dtype_size(dtype_);
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::rows(int64_t begin, int64_t count) const {
  if (shape_.empty()) throw std::invalid_argument("Tensor::rows on a scalar");
  Shape s = shape_;
  s[0] = count;
  int64_t row = numel() / std::max<int64_t>(shape_[0], 1);
  if (begin < 0 || begin + count > shape_[0])
    throw std::out_of_range("Tensor::rows: rows [" + std::to_string(begin) + ", " +
                            std::to_string(begin + count) + ") of " + shape_str(shape_));
  return slice(begin * row, std::move(s));
}

Tensor Tensor::reshape(Shape shape) const {
  if (shape_numel(shape) != numel())
    throw std::invalid_argument("Tensor::reshape: " + shape_str(shape_) + " to " +
                                shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

void Tensor::zero_() {
  if (!ptr_) return;
  if (device_.kind == DeviceKind::cuda)
    device_memset_zero(ptr_, nbytes(), device_);
  else
    std::memset(ptr_, 0, nbytes());
}

Tensor Tensor::to(Device dev) const {
  if (dev == device_) return *this;
  Tensor t = empty(shape_, dtype_, dev);
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  if (src.dtype_ != dtype_ || src.numel() != numel())
    throw std::invalid_argument("Tensor::copy_from: " + std::string(dtype_name(src.dtype_)) +
                                shape_str(src.shape_) + " into " + dtype_name(dtype_) +
                                shape_str(shape_));
  copy_bytes(ptr_, device_, src.ptr_, src.device_, nbytes());
}

void Tensor::check_dtype(DType want) const {
  if (want != dtype_)
    throw std::invalid_argument(std::string("tensor of dtype ") + dtype_name(dtype_) +
                                " accessed as " + dtype_name(want));
}

}  // namespace tern

#include <xxhash.h>

#include <cstdio>

namespace tern {
std::string content_checksum(const Tensor& t) {
  const Tensor host = t.to(Device{});
  char out[17];
  std::snprintf(out, sizeof out, "%016llx",
                static_cast<unsigned long long>(XXH3_64bits(host.raw(), host.nbytes())));
  return out;
}
}  // namespace tern
