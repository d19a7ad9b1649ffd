#include "tern/io/row_stream.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "tern/base/error.h"

namespace tern {
namespace {

// Rows per block of a scan: about 16 MB of features.
int64_t block_rows(int64_t row_bytes) {
  return std::max<int64_t>(1, (int64_t{16} << 20) / std::max<int64_t>(row_bytes, 1));
}

std::string hex(uint64_t h) {
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
  return out;
}

// One lock for every streamed split's calls into HDF5: the prefetch thread reads the training
// split while evaluation reads the validation split.
std::mutex& hdf5_mutex() {
  static std::mutex mu;
  return mu;
}

}  // namespace

std::shared_ptr<StreamedRows> StreamedRows::open(const std::string& path, const std::string& split,
                                                 const DataExpectation& expect) {
  std::shared_ptr<StreamedRows> s(new StreamedRows());
  s->path_ = path;
  s->split_ = split;
  s->file_ = std::make_unique<h5::File>(h5::File::open(path));
  const h5::File& f = *s->file_;
  const std::string xs = "/" + split + "/x", ys = "/" + split + "/y";
  const SplitSchema schema = check_split_schema(f, split, expect);
  s->expect_ = expect;
  s->rows_ = schema.rows;
  s->features_ = schema.features;
  s->x_shape_ = schema.x_dims;
  s->y_shape_ = schema.y_dims;
  s->y_dtype_ = expect.classification ? DType::i32 : DType::f32;
  s->y_row_bytes_ = static_cast<int64_t>(dtype_size(s->y_dtype_)) *
                    (expect.classification ? 1 : expect.target_dim);
  s->x_layout_ = f.row_layout(xs, DType::f32);
  s->y_layout_ = f.row_layout(ys, s->y_dtype_);
  if (s->direct()) {
    s->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (s->fd_ < 0) throw InputError("data file '" + path + "': " + std::strerror(errno));
  }
  return s;
}

StreamedRows::~StreamedRows() {
  if (fd_ >= 0) ::close(fd_);
}

const std::string& StreamedRows::why_not_direct() const {
  return x_layout_.direct ? y_layout_.why_not : x_layout_.why_not;
}

void StreamedRows::read_row(int64_t id, float* x, char* y) const {
  if (id < 0 || id >= rows_)
    throw std::out_of_range("StreamedRows: row " + std::to_string(id) + " of " +
                            std::to_string(rows_));
  if (fd_ >= 0) {
    const auto get = [&](void* out, int64_t bytes, uint64_t at) {
      for (int64_t done = 0; done < bytes;) {
        const ssize_t n = ::pread(fd_, static_cast<char*>(out) + done, bytes - done, at + done);
        if (n <= 0)
          throw InputError("data file '" + path_ + "': cannot read row " + std::to_string(id) +
                           " of /" + split_ + " (" +
                           (n == 0 ? "file truncated" : std::strerror(errno)) + ")");
        done += n;
      }
    };
    get(x, x_layout_.row_bytes, x_layout_.offset_of(id));
    get(y, y_layout_.row_bytes, y_layout_.offset_of(id));
    return;
  }
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  const Tensor tx = file_->read_rows("/" + split_ + "/x", id, id + 1, DType::f32);
  const Tensor ty = file_->read_rows("/" + split_ + "/y", id, id + 1, y_dtype_);
  std::memcpy(x, tx.raw(), tx.nbytes());
  std::memcpy(y, ty.raw(), ty.nbytes());
}

void StreamedRows::read(const int64_t* ids, int64_t n, float* x, void* y) const {
  char* yb = static_cast<char*>(y);
  for (int64_t i = 0; i < n; ++i) {
    float* row = x + i * features_;
    read_row(ids[i], row, yb + i * y_row_bytes_);
    if (!mean_.empty())
      for (int64_t c = 0; c < features_; ++c) row[c] = (row[c] - mean_[c]) * inv_[c];
  }
}

std::pair<Tensor, Tensor> StreamedRows::rows(int64_t begin, int64_t n) const {
  Shape xs = x_shape_, ys = y_shape_;
  xs[0] = ys[0] = n;
  Tensor x = Tensor::empty(xs), y = Tensor::empty(ys, y_dtype_);
  std::vector<int64_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = begin + i;
  read(ids.data(), n, x.data<float>(), y.raw());
  return {x, y};
}

StreamedRows::Scan StreamedRows::scan(bool want_stats) const {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  const std::string xs = "/" + split_ + "/x", ys = "/" + split_ + "/y";
  const int64_t block = block_rows(features_ * static_cast<int64_t>(sizeof(float)));
  const auto read = [&](const std::string& ds, int64_t r0, DType as) {
    return file_->read_rows(ds, r0, std::min(rows_, r0 + block), as);
  };
  XXH3_state_t* hx = XXH3_createState();
  XXH3_state_t* hy = XXH3_createState();
  XXH3_64bits_reset(hx);
  XXH3_64bits_reset(hy);
  FeatureStatsPass stats(features_);
  try {
    for (int64_t r0 = 0; r0 < rows_; r0 += block) {
      const Tensor x = read(xs, r0, DType::f32), y = read(ys, r0, y_dtype_);
      XXH3_64bits_update(hx, x.raw(), x.nbytes());
      XXH3_64bits_update(hy, y.raw(), y.nbytes());
      check_split_values(path_, split_, expect_, x, y, r0);
      if (want_stats) stats.add_sums(x.data<float>(), x.dim(0));
    }
    if (want_stats) {
      stats.end_sums();
      for (int64_t r0 = 0; r0 < rows_; r0 += block) {
        const Tensor x = read(xs, r0, DType::f32);
        stats.add_squares(x.data<float>(), x.dim(0));
      }
    }
  } catch (...) {
    XXH3_freeState(hx);
    XXH3_freeState(hy);
    throw;
  }
  Scan out;
  out.checksum = hex(XXH3_64bits_digest(hx)) + hex(XXH3_64bits_digest(hy));
  if (want_stats) out.stats = stats.finish();
  XXH3_freeState(hx);
  XXH3_freeState(hy);
  return out;
}

void StreamedRows::normalize(const FeatureStats& stats) {
  mean_.assign(features_, 0.0f);
  inv_.assign(features_, 1.0f);
  for (int64_t c = 0; c < features_; ++c) {
    mean_[c] = static_cast<float>(stats.mean[c]);
    inv_[c] = stats.stddev[c] > 1e-12 ? static_cast<float>(1.0 / stats.stddev[c]) : 1.0f;
  }
}

Tensor StreamedRows::sample_x(int64_t max_rows) const {
  const int64_t n = std::min(rows_, max_rows);
  Shape xs = x_shape_;
  xs[0] = n;
  Tensor x = Tensor::empty(xs);
  std::vector<char> y(static_cast<size_t>(y_row_bytes_));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = n == rows_ ? i : i * rows_ / n;
    read_row(id, x.data<float>() + i * features_, y.data());
  }
  return x;
}

std::shared_ptr<StreamedTokens> StreamedTokens::open(const std::string& path,
                                                     const std::string& dataset) {
  std::shared_ptr<StreamedTokens> s(new StreamedTokens());
  s->path_ = path;
  s->dataset_ = dataset;
  s->file_ = std::make_unique<h5::File>(h5::File::open(path));
  const h5::DatasetInfo info = s->file_->info(dataset);
  if (info.type_class != h5::TypeClass::integer || info.dims.size() != 1)
    throw InputError("token file '" + path + "': " + dataset + " must be a 1-D integer dataset");
  s->layout_ = s->file_->row_layout(dataset, DType::i32);
  s->layout_.rows = info.dims[0];
  if (s->layout_.direct) {
    s->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (s->fd_ < 0) throw InputError("token file '" + path + "': " + std::strerror(errno));
  }
  return s;
}

StreamedTokens::~StreamedTokens() {
  if (fd_ >= 0) ::close(fd_);
}

void StreamedTokens::read(int64_t start, int64_t n, int32_t* out) const {
  if (start < 0 || n < 0 || start + n > size())
    throw std::out_of_range("StreamedTokens: tokens [" + std::to_string(start) + ", " +
                            std::to_string(start + n) + ") of " + std::to_string(size()));
  if (fd_ < 0) {
    std::lock_guard<std::mutex> lock(hdf5_mutex());
    const Tensor t = file_->read_rows(dataset_, start, start + n, DType::i32);
    std::memcpy(out, t.raw(), t.nbytes());
    return;
  }
  // Piece by piece: a chunk holds chunk_rows tokens (contiguous: all of them).
  const int64_t per = layout_.chunk_rows ? layout_.chunk_rows : size();
  for (int64_t at = start; at < start + n;) {
    const int64_t m = std::min(start + n, (at / per + 1) * per) - at;
    char* dst = reinterpret_cast<char*>(out + (at - start));
    const int64_t bytes = m * static_cast<int64_t>(sizeof(int32_t));
    const uint64_t from = layout_.offset_of(at);
    for (int64_t done = 0; done < bytes;) {
      const ssize_t got = ::pread(fd_, dst + done, bytes - done, from + done);
      if (got <= 0)
        throw InputError("token file '" + path_ + "': cannot read " + dataset_ + " at token " +
                         std::to_string(at) + " (" +
                         (got == 0 ? "file truncated" : std::strerror(errno)) + ")");
      done += got;
    }
    at += m;
  }
}

std::string StreamedTokens::scan(int64_t vocab) const {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  XXH3_state_t* h = XXH3_createState();
  XXH3_64bits_reset(h);
  constexpr int64_t kBlock = int64_t{4} << 20;  // tokens per block: 16 MB
  try {
    for (int64_t b = 0; b < size(); b += kBlock) {
      const Tensor t = file_->read_rows(dataset_, b, std::min(size(), b + kBlock), DType::i32);
      XXH3_64bits_update(h, t.raw(), t.nbytes());
      const int32_t* p = t.data<int32_t>();
      for (int64_t i = 0; i < t.numel(); ++i)
        if (p[i] < 0 || p[i] >= vocab)
          throw InputError("token file '" + path_ + "': " + dataset_ + "[" + std::to_string(b + i) +
                           "] = " + std::to_string(p[i]) + ", outside the vocabulary of " +
                           std::to_string(vocab));
    }
  } catch (...) {
    XXH3_freeState(h);
    throw;
  }
  const std::string out = hex(XXH3_64bits_digest(h));
  XXH3_freeState(h);
  return out;
}

}  // namespace tern
