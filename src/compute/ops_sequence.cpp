// The checks of the embedding and attention ops (the op list: ops.cpp).
#include "tern/compute/ops.h"

#include <stdexcept>
#include <string>

#include "op_checks.h"

namespace tern::ops {

using namespace checks;

static void expect_ids(const char* op, const Tensor& ids) {
  if (ids.dtype() != DType::i32 || ids.ndim() != 2)
    fail(op, "ids must be i32 [N, T], got " + std::string(dtype_name(ids.dtype())) +
                 shape_str(ids.shape()));
}

// Id `id` at flat position i of ids [N, T] is outside [0, vocab).
[[noreturn]] static void bad_id(const char* op, const Tensor& ids, int64_t i, int32_t id,
                                int64_t vocab) {
  const int64_t t = ids.dim(1);
  throw std::out_of_range(std::string(op) + ": ids[" + std::to_string(i / t) + ", " +
                          std::to_string(i % t) + "] = " + std::to_string(id) + ", outside [0, " +
                          std::to_string(vocab) + ")");
}

// The table, positions (optional) and activation tensors of an embedding call.
static void embedding_args(const char* op, const Backend& be, const Tensor& ids,
                           const Tensor& table, const Tensor* positions, const Tensor& act,
                           const char* act_name) {
  expect_ids(op, ids);
  expect_f32(op, "table", table);
  expect_float(op, act_name, act, be);
  expect_2d(op, "table", table);
  const int64_t n = ids.dim(0), t = ids.dim(1), c = table.dim(1);
  expect_shape(op, act_name, act, {n, t, c});
  if (positions) {
    backend_of(op, {{"table", &table}, {"positions", positions}});
    expect_f32(op, "positions", *positions);
    if (positions->ndim() != 2 || positions->dim(0) < t || positions->dim(1) != c)
      fail(op, "positions " + shape_str(positions->shape()) + " cannot cover " + std::to_string(t) +
                   " positions of width " + std::to_string(c));
  }
}

void embedding_forward(const Tensor& ids, const Tensor& table, const Tensor* positions,
                       Tensor& out) {
  const char* op = "embedding_forward";
  Backend& be = backend_of(op, {{"ids", &ids}, {"table", &table}, {"out", &out}});
  embedding_args(op, be, ids, table, positions, out, "out");
  const int64_t n = ids.dim(0), t = ids.dim(1), vocab = table.dim(0), c = table.dim(1);
  const int64_t bad = be.embedding_forward(ids.data<int32_t>(), table.data<float>(),
                                           positions ? positions->data<float>() : nullptr,
                                           out.raw(), out.dtype(), n, t, vocab, c);
  if (bad >= 0) {
    Tensor one = Tensor::empty({1}, DType::i32);
    one.copy_from(ids.reshape({n * t}).slice(bad, {1}));
    bad_id(op, ids, bad, one.data<int32_t>()[0], vocab);
  }
}

void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable, Tensor* dpositions) {
  const char* op = "embedding_backward";
  Backend& be = backend_of(op, {{"ids", &ids}, {"dout", &dout}, {"dtable", &dtable}});
  embedding_args(op, be, ids, dtable, dpositions, dout, "dout");
  const int64_t n = ids.dim(0), t = ids.dim(1), vocab = dtable.dim(0), c = dtable.dim(1);
  // Ids were checked by the forward pass; the GPU's kernels skip any outside the table, and the
  // CPU's ids are checked here again, as they are cheap to read.
  if (!ids.device().on_gpu()) {
    const int32_t* id = ids.data<int32_t>();
    for (int64_t i = 0; i < n * t; ++i)
      if (id[i] < 0 || id[i] >= vocab) bad_id(op, ids, i, id[i], vocab);
  }
  return be.embedding_backward(ids.data<int32_t>(), dout.raw(), dout.dtype(), dtable.data<float>(),
                               dpositions ? dpositions->data<float>() : nullptr, n, t, vocab, c);
}

// qkv [N, T, 3C] with C = heads x D.
static AttentionDims attention_dims(const char* op, const Tensor& qkv, int64_t heads) {
  if (qkv.ndim() != 3 || qkv.dim(2) % 3)
    fail(op, "qkv must be [N, T, 3C], got " + shape_str(qkv.shape()));
  const int64_t c = qkv.dim(2) / 3;
  if (heads < 1 || c % heads)
    fail(op, std::to_string(c) + " channels do not split into " + std::to_string(heads) + " heads");
  return {qkv.dim(0), qkv.dim(1), heads, c / heads};
}

void attention_forward(const Tensor& qkv, Tensor& out, Tensor& lse, int64_t heads) {
  const char* op = "attention_forward";
  Backend& be = backend_of(op, {{"qkv", &qkv}, {"out", &out}, {"lse", &lse}});
  const DType t = expect_compute(op, be, {{"qkv", &qkv}, {"out", &out}});
  expect_f32(op, "lse", lse);
  const AttentionDims a = attention_dims(op, qkv, heads);
  expect_shape(op, "out", out, {a.n, a.t, a.heads * a.d});
  expect_shape(op, "lse", lse, {a.n, a.heads, a.t});
  return be.attention_forward(qkv.raw(), t, out.raw(), lse.data<float>(), a);
}

void attention_backward(const Tensor& qkv, const Tensor& out, const Tensor& dout, const Tensor& lse,
                        Tensor& dqkv, int64_t heads) {
  const char* op = "attention_backward";
  Backend& be = backend_of(
      op, {{"qkv", &qkv}, {"out", &out}, {"dout", &dout}, {"lse", &lse}, {"dqkv", &dqkv}});
  const DType t =
      expect_compute(op, be, {{"qkv", &qkv}, {"out", &out}, {"dout", &dout}, {"dqkv", &dqkv}});
  expect_f32(op, "lse", lse);
  const AttentionDims a = attention_dims(op, qkv, heads);
  expect_shape(op, "out", out, {a.n, a.t, a.heads * a.d});
  expect_shape(op, "dout", dout, out.shape());
  expect_shape(op, "dqkv", dqkv, qkv.shape());
  expect_shape(op, "lse", lse, {a.n, a.heads, a.t});
  return be.attention_backward(qkv.raw(), out.raw(), dout.raw(), lse.data<float>(), t, dqkv.raw(),
                               a);
}

}  // namespace tern::ops
