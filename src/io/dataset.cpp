#include "tern/io/dataset.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include <nlohmann/json.hpp>

#include "tern/base/error.h"
#include "tern/io/hdf5_file.h"
#include "tern/io/row_stream.h"

namespace tern {
namespace {

uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Unbiased integer in [0, bound) (Lemire's method), the same on every platform.
uint64_t bounded(std::mt19937_64& rng, uint64_t bound) {
  unsigned __int128 m = static_cast<unsigned __int128>(rng()) * bound;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < bound) {
    const uint64_t threshold = -bound % bound;
    while (low < threshold) {
      m = static_cast<unsigned __int128>(rng()) * bound;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

std::string bad(const std::string& path, const std::string& dataset, const std::string& what) {
  return "data file '" + path + "': dataset " + dataset + ": " + what;
}

std::string type_name(const h5::DatasetInfo& info) {
  std::string cls = info.type_class == h5::TypeClass::integer    ? "integer"
                    : info.type_class == h5::TypeClass::floating ? "float"
                                                                 : "non-numeric";
  return cls + " (" + std::to_string(info.type_size * 8) + "-bit)";
}

// Rows of `t` numbered from `first`.
void check_finite(const std::string& path, const std::string& dataset, const Tensor& t,
                  int64_t first) {
  const float* p = t.data<float>();
  const int64_t rows = t.numel() ? t.dim(0) : 0;
  const int64_t cols = rows ? t.numel() / rows : 0;
  for (int64_t i = 0; i < t.numel(); ++i)
    if (!std::isfinite(p[i]))
      throw InputError(bad(path, dataset,
                           "row " + std::to_string(first + i / cols) + ", column " +
                               std::to_string(i % cols) + " is " +
                               (std::isnan(p[i]) ? "NaN" : "infinite")));
}

Split load_split(const h5::File& file, const std::string& name, const DataExpectation& expect) {
  const SplitSchema schema = check_split_schema(file, name, expect);
  Split split;
  split.name = name;
  split.x = file.read("/" + name + "/x", DType::f32);
  split.y =
      expect.classification
          ? file.read("/" + name + "/y", DType::i32)
          : file.read("/" + name + "/y", DType::f32).reshape({schema.rows, expect.target_dim});
  check_split_values(file.path(), name, expect, split.x, split.y, 0);
  return split;
}

}  // namespace

SplitSchema check_split_schema(const h5::File& file, const std::string& name,
                               const DataExpectation& expect) {
  const std::string xs = "/" + name + "/x", ys = "/" + name + "/y";
  const std::string& path = file.path();
  for (const auto& ds : {xs, ys})
    if (!file.exists(ds))
      throw InputError(
          bad(path, ds, "missing (tern-data writes /train/x, /train/y, /val/x, /val/y)"));
  h5::DatasetInfo xi = file.info(xs), yi = file.info(ys);
  if (xi.type_class != h5::TypeClass::floating)
    throw InputError(bad(path, xs, "expected float features, found " + type_name(xi)));
  if (xi.dims.size() < 2)
    throw InputError(
        bad(path, xs, "expected shape [rows, features...], found " + shape_str(xi.dims)));
  SplitSchema out;
  out.rows = xi.dims[0];
  out.features = shape_numel(Shape(xi.dims.begin() + 1, xi.dims.end()));
  out.x_dims = xi.dims;
  if (expect.input_dim && out.features != expect.input_dim)
    throw InputError(bad(path, xs,
                         "rows have " + std::to_string(out.features) +
                             " features, the model expects " + std::to_string(expect.input_dim) +
                             " (model.input_dim)"));
  if (expect.classification) {
    if (yi.type_class != h5::TypeClass::integer)
      throw InputError(bad(path, ys, "expected integer class labels, found " + type_name(yi)));
    if (yi.dims.size() != 1)
      throw InputError(bad(path, ys, "expected shape [rows], found " + shape_str(yi.dims)));
  } else {
    if (yi.type_class != h5::TypeClass::floating)
      throw InputError(bad(path, ys, "expected float regression targets, found " + type_name(yi)));
    const int64_t d = yi.dims.size() == 1 ? 1 : yi.dims.size() == 2 ? yi.dims[1] : -1;
    if (d != expect.target_dim)
      throw InputError(bad(path, ys,
                           "expected shape [rows, " + std::to_string(expect.target_dim) +
                               "], found " + shape_str(yi.dims)));
  }
  if (yi.dims[0] != out.rows)
    throw InputError(bad(path, ys,
                         "has " + std::to_string(yi.dims[0]) + " rows but " + xs + " has " +
                             std::to_string(out.rows)));
  if (expect.classification)
    out.y_dims = {out.rows};
  else
    out.y_dims = {out.rows, expect.target_dim};
  return out;
}

void check_split_values(const std::string& path, const std::string& name,
                        const DataExpectation& expect, const Tensor& x, const Tensor& y,
                        int64_t first) {
  check_finite(path, "/" + name + "/x", x, first);
  if (!expect.classification) {
    check_finite(path, "/" + name + "/y", y, first);
    return;
  }
  const int32_t* labels = y.data<int32_t>();
  for (int64_t r = 0; r < y.numel(); ++r)
    if (labels[r] < 0 || labels[r] >= expect.classes)
      throw InputError(bad(path, "/" + name + "/y",
                           "row " + std::to_string(first + r) + " has label " +
                               std::to_string(labels[r]) + ", outside [0, " +
                               std::to_string(expect.classes) + ") (the model's output size)"));
}

FeatureStatsPass::FeatureStatsPass(int64_t cols) : cols_(cols) {
  s_.mean.assign(cols, 0.0);
  s_.stddev.assign(cols, 0.0);
  s_.min.assign(cols, INFINITY);
  s_.max.assign(cols, -INFINITY);
}

void FeatureStatsPass::add_sums(const float* p, int64_t rows) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols_; ++c) {
      const double v = p[r * cols_ + c];
      s_.mean[c] += v;
      s_.min[c] = std::min(s_.min[c], v);
      s_.max[c] = std::max(s_.max[c], v);
    }
  rows_ += rows;
}

void FeatureStatsPass::end_sums() {
  for (auto& m : s_.mean) m /= std::max<int64_t>(rows_, 1);
  if (rows_ == 0) {  // no rows: zeros, not infinities
    s_.min.assign(cols_, 0.0);
    s_.max.assign(cols_, 0.0);
  }
}

void FeatureStatsPass::add_squares(const float* p, int64_t rows) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols_; ++c) {
      const double d = p[r * cols_ + c] - s_.mean[c];
      s_.stddev[c] += d * d;
    }
}

FeatureStats FeatureStatsPass::finish() {
  for (auto& v : s_.stddev) v = std::sqrt(v / std::max<int64_t>(rows_, 1));
  return std::move(s_);
}

FeatureStats feature_stats(const Tensor& x) {
  const int64_t rows = x.numel() ? x.dim(0) : 0;
  const int64_t cols = rows ? x.numel() / rows : 0;
  FeatureStatsPass pass(cols);
  pass.add_sums(x.data<float>(), rows);
  pass.end_sums();
  pass.add_squares(x.data<float>(), rows);
  return pass.finish();
}

int64_t Dataset::input_dim_of(const std::string& path) {
  h5::File file = h5::File::open(path);
  if (!file.exists("/train/x") && file.exists("/train/tokens"))
    throw InputError("data file '" + path +
                     "' is a token corpus (tern-data text), not rows of features (/train/x)");
  if (!file.exists("/train/x"))
    throw InputError(
        bad(path, "/train/x", "missing (tern-data writes /train/x, /train/y, /val/x, /val/y)"));
  h5::DatasetInfo xi = file.info("/train/x");
  if (xi.dims.size() < 2)
    throw InputError(
        bad(path, "/train/x", "expected shape [rows, features...], found " + shape_str(xi.dims)));
  return shape_numel(Shape(xi.dims.begin() + 1, xi.dims.end()));
}

Split token_windows(std::string name, Tensor tokens, int64_t block) {
  if (tokens.dtype() != DType::i32 || tokens.ndim() != 1)
    throw std::invalid_argument("token_windows: tokens must be i32 [n]");
  if (block < 1) throw std::invalid_argument("token_windows: block must be >= 1");
  Split s;
  s.name = std::move(name);
  s.tokens = std::move(tokens);
  s.block = block;
  return s;
}

int64_t Split::rows() const {
  if (block > 0) return std::max<int64_t>(num_tokens() - block, 0);
  if (stream) return stream->rows();
  return x.numel() ? x.dim(0) : 0;
}

int64_t Split::num_tokens() const { return token_stream ? token_stream->size() : tokens.numel(); }

std::pair<Tensor, Tensor> Split::rows_at(int64_t begin, int64_t n) const {
  if (stream) return stream->rows(begin, n);
  return {x.rows(begin, n), y.rows(begin, n)};
}

void Split::window(int64_t start, int32_t* x, int32_t* y) const {
  if (token_stream) {
    // One read of block + 1 tokens: the window and its next tokens overlap.
    thread_local std::vector<int32_t> buf;
    buf.resize(block + 1);
    token_stream->read(start, block + 1, buf.data());
    std::copy(buf.begin(), buf.begin() + block, x);
    std::copy(buf.begin() + 1, buf.end(), y);
    return;
  }
  const int32_t* tok = tokens.data<int32_t>() + start;
  std::copy(tok, tok + block, x);
  std::copy(tok + 1, tok + block + 1, y);
}

std::vector<std::string> utf8_characters(const std::string& text) {
  std::vector<std::string> out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const auto b = static_cast<unsigned char>(text[i]);
    const size_t len = b < 0x80           ? 1
                       : (b >> 5) == 0x6  ? 2
                       : (b >> 4) == 0xE  ? 3
                       : (b >> 3) == 0x1E ? 4
                                          : 0;
    bool ok = len > 0 && i + len <= text.size();
    for (size_t k = 1; ok && k < len; ++k)
      ok = (static_cast<unsigned char>(text[i + k]) & 0xC0) == 0x80;
    if (!ok) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", b);
      throw InputError("invalid UTF-8 at byte " + std::to_string(i) + " (byte " + hex + ")");
    }
    out.push_back(text.substr(i, len));
    i += len;
  }
  return out;
}

bool TokenCorpus::is_token_file(const std::string& path) {
  return h5::File::open(path).exists("/train/tokens");
}

std::vector<std::string> TokenCorpus::vocab_of(const std::string& path) {
  h5::File f = h5::File::open(path);
  std::vector<std::string> vocab;
  try {
    vocab = nlohmann::json::parse(f.read_attr_string("/", "vocab")).get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw InputError("token file '" + path +
                     "': attribute /@vocab is not a JSON list of strings (" + e.what() + ")");
  }
  if (vocab.empty()) throw InputError("token file '" + path + "': the vocabulary is empty");
  return vocab;
}

TokenCorpus TokenCorpus::load(const std::string& path) {
  TokenCorpus c;
  c.vocab = vocab_of(path);
  h5::File f = h5::File::open(path);
  for (auto [name, out] : {std::pair{"train", &c.train}, {"val", &c.val}}) {
    const std::string ds = std::string("/") + name + "/tokens";
    if (!f.exists(ds)) {
      if (std::string(name) == "train") throw InputError("token file '" + path + "': no " + ds);
      *out = Tensor::empty({0}, DType::i32);
      continue;
    }
    if (f.info(ds).type_class != h5::TypeClass::integer || f.info(ds).dims.size() != 1)
      throw InputError("token file '" + path + "': " + ds + " must be a 1-D integer dataset");
    *out = f.read(ds, DType::i32);
    const int32_t* t = out->data<int32_t>();
    for (int64_t i = 0; i < out->numel(); ++i)
      if (t[i] < 0 || t[i] >= static_cast<int64_t>(c.vocab.size()))
        throw InputError("token file '" + path + "': " + ds + "[" + std::to_string(i) +
                         "] = " + std::to_string(t[i]) + ", outside the vocabulary of " +
                         std::to_string(c.vocab.size()));
  }
  return c;
}

Dataset Dataset::load(const std::string& path, const DataExpectation& expect) {
  h5::File file = h5::File::open(path);
  Dataset ds;
  ds.path = path;
  ds.train = load_split(file, "train", expect);
  if (ds.train.rows() == 0) throw InputError(bad(path, "/train/x", "has no rows"));
  ds.feature_names = feature_names_of(file);
  ds.has_val = file.exists("/val/x") || file.exists("/val/y");
  if (ds.has_val) ds.val = load_split(file, "val", expect);
  if (ds.has_val && ds.val.x.shape().size() != ds.train.x.shape().size())
    throw InputError(bad(path, "/val/x",
                         "shape " + shape_str(ds.val.x.shape()) + " does not match /train/x " +
                             shape_str(ds.train.x.shape())));
  return ds;
}

std::vector<std::string> feature_names_of(const h5::File& file) {
  if (!file.has_attr("/", "feature_names")) return {};
  const nlohmann::json j =
      nlohmann::json::parse(file.read_attr_string("/", "feature_names"), nullptr, false);
  if (!j.is_array()) return {};
  std::vector<std::string> names;
  for (const auto& n : j) {
    if (!n.is_string()) return {};
    names.push_back(n.get<std::string>());
  }
  return names;
}

void normalize_inputs(Split& split, const FeatureStats& stats) {
  const int64_t rows = split.rows();
  const int64_t cols = static_cast<int64_t>(stats.mean.size());
  float* p = split.x.data<float>();
  std::vector<float> mean(cols), inv(cols);
  for (int64_t c = 0; c < cols; ++c) {
    mean[c] = static_cast<float>(stats.mean[c]);
    inv[c] = stats.stddev[c] > 1e-12 ? static_cast<float>(1.0 / stats.stddev[c]) : 1.0f;
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) p[r * cols + c] = (p[r * cols + c] - mean[c]) * inv[c];
}

const std::vector<int64_t>& Sampler::permutation(int64_t epoch) {
  auto it = cache_.find(epoch);
  if (it != cache_.end()) return it->second;
  while (cache_.size() >= 2) cache_.erase(cache_.begin());
  std::vector<int64_t> perm(rows_);
  for (int64_t i = 0; i < rows_; ++i) perm[i] = i;
  std::mt19937_64 rng(mix(seed_ ^ mix(static_cast<uint64_t>(epoch) + 0x5EED)));
  for (int64_t i = rows_ - 1; i > 0; --i)
    std::swap(perm[i], perm[bounded(rng, static_cast<uint64_t>(i) + 1)]);
  return cache_.emplace(epoch, std::move(perm)).first->second;
}

int64_t Sampler::sample_at(int64_t position) {
  return permutation(position / rows_)[position % rows_];
}

std::pair<int64_t, int64_t> even_share(int64_t total, int64_t part, int64_t parts) {
  return {total * part / parts, total * (part + 1) / parts};
}

Loader::Loader(const Split& split, Options opt)
    : split_(split), opt_(opt), sampler_(split.rows(), opt.seed) {
  worker_.start([this] { prefetch_loop(); });
}

Loader::~Loader() { worker_.stop(); }

Batch Loader::make(int64_t step, int64_t micro) {
  auto [mb_begin, mb_end] = even_share(opt_.batch_size, micro, opt_.accum_steps);
  auto [r_begin, r_end] = even_share(mb_end - mb_begin, opt_.rank, opt_.world);
  Batch b;
  b.step = step;
  b.micro = micro;
  b.first_sample =
      opt_.start_position + (step - opt_.start_step) * opt_.batch_size + mb_begin + r_begin;
  const int64_t rows = r_end - r_begin;
  auto allocate =
      opt_.allocate ? opt_.allocate : [](const Shape& s, DType dt) { return Tensor::empty(s, dt); };
  if (split_.block > 0) {
    const int64_t T = split_.block;
    b.x = allocate({rows, T}, DType::i32);
    b.y = allocate({rows, T}, DType::i32);
    for (int64_t i = 0; i < rows; ++i)
      split_.window(sampler_.sample_at(b.first_sample + i), b.x.data<int32_t>() + i * T,
                    b.y.data<int32_t>() + i * T);
    return b;
  }
  const StreamedRows* stream = split_.stream.get();
  Shape xs = stream ? stream->x_shape() : split_.x.shape();
  Shape ys = stream ? stream->y_shape() : split_.y.shape();
  xs[0] = ys[0] = rows;
  b.x = allocate(xs, DType::f32);
  b.y = allocate(ys, stream ? stream->y_dtype() : split_.y.dtype());
  const size_t x_row = b.x.nbytes() / std::max<int64_t>(rows, 1);
  const size_t y_row = b.y.nbytes() / std::max<int64_t>(rows, 1);
  const char* xsrc = static_cast<const char*>(split_.x.raw());
  const char* ysrc = static_cast<const char*>(split_.y.raw());
  // The sampler is not thread-safe: look the rows up first, copy (or read) them in parallel.
  std::vector<int64_t> source(rows);
  for (int64_t i = 0; i < rows; ++i) source[i] = sampler_.sample_at(b.first_sample + i);
  auto copy_rows = [&](int64_t begin, int64_t end) {
    if (stream) {
      stream->read(source.data() + begin, end - begin,
                   b.x.data<float>() + begin * static_cast<int64_t>(x_row / sizeof(float)),
                   static_cast<char*>(b.y.raw()) + begin * y_row);
      return;
    }
    for (int64_t i = begin; i < end; ++i) {
      const int64_t s = source[i];
      std::memcpy(static_cast<char*>(b.x.raw()) + i * x_row, xsrc + s * x_row, x_row);
      std::memcpy(static_cast<char*>(b.y.raw()) + i * y_row, ysrc + s * y_row, y_row);
    }
  };
  constexpr size_t kParallelBytes = size_t{4}
                                    << 20;  // below this, threads cost more than they save
  const int64_t threads = rows * (x_row + y_row) >= kParallelBytes
                              ? std::clamp<int64_t>(opt_.threads, 1, std::max<int64_t>(rows, 1))
                              : 1;
  // A read from the file can fail (a truncated file): every thread's error is kept, all threads
  // are joined, and the first error goes to the caller.
  std::vector<std::exception_ptr> errors(threads);
  auto guarded = [&](int64_t t) {
    try {
      copy_rows(rows * t / threads, rows * (t + 1) / threads);
    } catch (...) {
      errors[t] = std::current_exception();
    }
  };
  std::vector<std::thread> helpers;
  for (int64_t t = 1; t < threads; ++t) helpers.emplace_back(guarded, t);
  guarded(0);
  for (auto& h : helpers) h.join();
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
  return b;
}

void Loader::prefetch_loop() {
  try {
    for (int64_t step = opt_.start_step;; ++step)
      for (int64_t micro = 0; micro < opt_.accum_steps; ++micro) {
        Batch b = make(step, micro);
        auto lock = worker_.lock();
        if (!worker_.wait(lock,
                          [&] { return static_cast<int64_t>(ready_.size()) < opt_.prefetch; }))
          return;
        ready_.push_back(std::move(b));
        worker_.notify();
      }
  } catch (...) {
    auto lock = worker_.lock();
    error_ = std::current_exception();
    worker_.notify();
  }
}

Batch Loader::next() {
  auto lock = worker_.lock();
  worker_.wait_until(lock, [&] { return !ready_.empty() || error_; });
  if (ready_.empty()) std::rethrow_exception(error_);
  Batch b = std::move(ready_.front());
  ready_.pop_front();
  worker_.notify();
  return b;
}

}  // namespace tern
