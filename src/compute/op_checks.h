#pragma once
// The argument checks the ops share, and finding the backend of a call's tensors. Every failure
// is std::invalid_argument "op NAME: what is wrong".
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "tern/compute/backend.h"
#include "tern/compute/ops.h"

namespace tern::ops::checks {

using compute::Backend;
using P = std::pair<const char*, const Tensor*>;

[[noreturn]] void fail(const char* op, const std::string& what);
// Every tensor of an op lives on one device; the backend of that device.
Backend& backend_of(const char* op, std::initializer_list<P> tensors);
// f32, or bf16 where the backend computes in it: the compute dtype of activations.
DType expect_float(const char* op, const char* name, const Tensor& t, const Backend& be);
// The compute dtype shared by every named tensor.
DType expect_compute(const char* op, const Backend& be, std::initializer_list<P> tensors);
void expect_f32(const char* op, const char* name, const Tensor& t);
void expect_dtype(const char* op, const char* name, const Tensor& t, DType want);
void expect_shape(const char* op, const char* name, const Tensor& t, const Shape& want);
void expect_2d(const char* op, const char* name, const Tensor& t);
void expect_4d(const char* op, const char* name, const Tensor& t);
void expect_same(const char* op, const Tensor& a, const Tensor& b);
void expect_segments(const char* op, const std::vector<ParamSegment>& segments, int64_t n);

}  // namespace tern::ops::checks
