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
