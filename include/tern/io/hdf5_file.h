#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tern/compute/tensor.h"

// A thin RAII layer over the HDF5 C API, for data sets and exported models. Errors are
// InputErrors naming the file and the object.
namespace tern::h5 {

enum class TypeClass { integer, floating, other };

struct DatasetInfo {
  TypeClass type_class = TypeClass::other;
  size_t type_size = 0;
  Shape dims;
};

// Where the rows of a dataset lie in the file, so that they can be read with pread(), from any
// thread, without the HDF5 library: a contiguous dataset, or one chunked in whole rows without
// filters (what tern-data writes for streaming), stored as the element type asked for. Otherwise
// `direct` is false and `why_not` says why.
struct RowLayout {
  bool direct = false;
  std::string why_not;
  int64_t rows = 0, row_bytes = 0;
  int64_t chunk_rows = 0;               // 0: contiguous, at chunk_offsets[0]
  std::vector<uint64_t> chunk_offsets;  // file offset of each chunk, in row order
  uint64_t offset_of(int64_t row) const {
    if (chunk_rows == 0) return chunk_offsets[0] + static_cast<uint64_t>(row * row_bytes);
    return chunk_offsets[row / chunk_rows] + static_cast<uint64_t>((row % chunk_rows) * row_bytes);
  }
};

class File {
 public:
  static File open(const std::string& path);    // read only
  static File create(const std::string& path);  // truncates
  File(File&& other) noexcept;
  File& operator=(File&& other) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File();

  const std::string& path() const { return path_; }
  bool exists(const std::string& object) const;  // any link along the path may be missing
  DatasetInfo info(const std::string& dataset) const;

  // Reads a whole dataset, converting to the requested element type.
  Tensor read(const std::string& dataset, DType as) const;
  // Rows [begin, end) of the first dimension of a dataset, converting likewise.
  Tensor read_rows(const std::string& dataset, int64_t begin, int64_t end, DType as) const;
  // Writes a tensor (creating the groups on the way), chunked and compressed when large.
  void write(const std::string& dataset, const Tensor& t);
  // A dataset of `dims` (rows first) to be written in pieces with write_rows: chunks of
  // chunk_rows whole rows, not compressed, so that readers can address each row (RowLayout).
  void create_rows(const std::string& dataset, DType dtype, const Shape& dims, int64_t chunk_rows);
  // Rows [begin, begin + rows.dim(0)) of a dataset made by create_rows.
  void write_rows(const std::string& dataset, int64_t begin, const Tensor& rows);
  // How `dataset`'s rows can be read directly as elements of `as`.
  RowLayout row_layout(const std::string& dataset, DType as) const;
  void write_attr(const std::string& object, const std::string& name, const std::string& value);
  void write_attr(const std::string& object, const std::string& name, double value);
  std::string read_attr_string(const std::string& object, const std::string& name) const;
  bool has_attr(const std::string& object, const std::string& name) const;

 private:
  File(std::string path, int64_t id) : path_(std::move(path)), id_(id) {}
  std::string where(const std::string& object) const;
  std::string path_;
  int64_t id_ = -1;
};

}  // namespace tern::h5
