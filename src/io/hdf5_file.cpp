#include <hdf5.h>

#include <algorithm>
#include <mutex>
#include <stdexcept>
#include <string>

#include "tern/base/error.h"
#include "tern/io/hdf5_file.h"

namespace tern::h5 {
namespace {

// HDF5 prints its own error stack by default; tern reports errors itself.
void silence_hdf5() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

struct Id {
  hid_t id;
  herr_t (*close)(hid_t);
  Id(hid_t i, herr_t (*c)(hid_t)) : id(i), close(c) {}
  Id(const Id&) = delete;
  ~Id() {
    if (id >= 0) close(id);
  }
  operator hid_t() const { return id; }
};

hid_t memory_type(DType dt) {
  switch (dt) {
    case DType::f32:
      return H5T_NATIVE_FLOAT;
    case DType::i32:
      return H5T_NATIVE_INT32;
    case DType::i64:
      return H5T_NATIVE_INT64;
    case DType::u8:
      return H5T_NATIVE_UINT8;
    case DType::bf16:
      break;
  }
  throw std::invalid_argument(std::string("h5: no HDF5 type for ") + dtype_name(dt));
}

}  // namespace

File File::open(const std::string& path) {
  silence_hdf5();
  if (H5Fis_hdf5(path.c_str()) <= 0)
    throw InputError("'" + path + "' is missing or is not an HDF5 file");
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) throw InputError("'" + path + "': cannot open as HDF5");
  return File(path, id);
}

File File::create(const std::string& path) {
  silence_hdf5();
  // The 1.8 file format at least: its dense attribute storage holds attributes over 64 KiB (an
  // export's normalisation statistics for thousands of features).
  Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  if (id < 0) throw std::runtime_error("'" + path + "': cannot create HDF5 file");
  return File(path, id);
}

File::File(File&& other) noexcept : path_(std::move(other.path_)), id_(other.id_) {
  other.id_ = -1;
}

File& File::operator=(File&& other) noexcept {
  std::swap(path_, other.path_);
  std::swap(id_, other.id_);
  return *this;
}

File::~File() {
  if (id_ >= 0) H5Fclose(id_);
}

std::string File::where(const std::string& object) const { return "'" + path_ + "': " + object; }

bool File::exists(const std::string& object) const {
  // H5Lexists fails on a missing intermediate group, so walk the path.
  std::string partial;
  size_t pos = 0;
  while (pos != std::string::npos) {
    size_t next = object.find('/', pos + 1);
    partial = object.substr(0, next);
    if (partial != "/" && !partial.empty() && H5Lexists(id_, partial.c_str(), H5P_DEFAULT) <= 0)
      return false;
    pos = next;
  }
  return true;
}

DatasetInfo File::info(const std::string& dataset) const {
  if (!exists(dataset)) throw InputError(where(dataset) + " does not exist");
  Id ds(H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose);
  if (ds < 0) throw InputError(where(dataset) + " is not a dataset");
  Id type(H5Dget_type(ds), H5Tclose);
  Id space(H5Dget_space(ds), H5Sclose);
  DatasetInfo out;
  switch (H5Tget_class(type)) {
    case H5T_INTEGER:
      out.type_class = TypeClass::integer;
      break;
    case H5T_FLOAT:
      out.type_class = TypeClass::floating;
      break;
    default:
      out.type_class = TypeClass::other;
  }
  out.type_size = H5Tget_size(type);
  int rank = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> dims(std::max(rank, 0));
  H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  for (hsize_t d : dims) out.dims.push_back(static_cast<int64_t>(d));
  return out;
}

Tensor File::read(const std::string& dataset, DType as) const {
  DatasetInfo meta = info(dataset);
  Tensor t = Tensor::empty(meta.dims, as);
  Id ds(H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose);
  if (H5Dread(ds, memory_type(as), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()) < 0)
    throw InputError(where(dataset) + ": cannot read as " + dtype_name(as));
  return t;
}

Tensor File::read_rows(const std::string& dataset, int64_t begin, int64_t end, DType as) const {
  DatasetInfo meta = info(dataset);
  if (meta.dims.empty() || begin < 0 || end < begin || end > meta.dims[0])
    throw std::out_of_range(where(dataset) + ": rows [" + std::to_string(begin) + ", " +
                            std::to_string(end) + ") out of range");
  Shape shape = meta.dims;
  shape[0] = end - begin;
  Tensor t = Tensor::empty(shape, as);
  if (t.numel() == 0) return t;
  Id ds(H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose);
  Id file_space(H5Dget_space(ds), H5Sclose);
  std::vector<hsize_t> start(shape.size(), 0), count(shape.begin(), shape.end());
  start[0] = static_cast<hsize_t>(begin);
  Id mem_space(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr), H5Sclose);
  if (H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start.data(), nullptr, count.data(),
                          nullptr) < 0 ||
      H5Dread(ds, memory_type(as), mem_space, file_space, H5P_DEFAULT, t.raw()) < 0)
    throw InputError(where(dataset) + ": cannot read rows as " + dtype_name(as));
  return t;
}

void File::write(const std::string& dataset, const Tensor& t) {
  Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl, 1);
  std::vector<hsize_t> dims(t.shape().begin(), t.shape().end());
  Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  if (t.nbytes() > (1 << 20) && !dims.empty()) {
    // Chunks of whole rows, about 1 MB each, deflated.
    std::vector<hsize_t> chunk = dims;
    const hsize_t row_bytes = t.nbytes() / std::max<hsize_t>(dims[0], 1);
    chunk[0] = std::clamp<hsize_t>((1 << 20) / std::max<hsize_t>(row_bytes, 1), 1, dims[0]);
    H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data());
    H5Pset_deflate(dcpl, 4);
  }
  Id ds(H5Dcreate2(id_, dataset.c_str(), memory_type(t.dtype()), space, lcpl, dcpl, H5P_DEFAULT),
        H5Dclose);
  if (ds < 0 || H5Dwrite(ds, memory_type(t.dtype()), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()) < 0)
    throw std::runtime_error("'" + path_ + "': cannot write dataset " + dataset);
}

void File::create_rows(const std::string& dataset, DType dtype, const Shape& dims,
                       int64_t chunk_rows) {
  Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl, 1);
  std::vector<hsize_t> d(dims.begin(), dims.end());
  Id space(H5Screate_simple(static_cast<int>(d.size()), d.data(), nullptr), H5Sclose);
  Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  if (!d.empty() && d[0] > 0) {
    std::vector<hsize_t> chunk = d;
    chunk[0] = std::clamp<hsize_t>(static_cast<hsize_t>(chunk_rows), 1, d[0]);
    H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data());
  }
  Id ds(H5Dcreate2(id_, dataset.c_str(), memory_type(dtype), space, lcpl, dcpl, H5P_DEFAULT),
        H5Dclose);
  if (ds < 0) throw std::runtime_error("'" + path_ + "': cannot create dataset " + dataset);
}

void File::write_rows(const std::string& dataset, int64_t begin, const Tensor& rows) {
  if (rows.numel() == 0) return;
  Id ds(H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose);
  Id file_space(H5Dget_space(ds), H5Sclose);
  std::vector<hsize_t> start(rows.ndim(), 0), count(rows.shape().begin(), rows.shape().end());
  start[0] = static_cast<hsize_t>(begin);
  Id mem_space(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr), H5Sclose);
  if (ds < 0 ||
      H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start.data(), nullptr, count.data(),
                          nullptr) < 0 ||
      H5Dwrite(ds, memory_type(rows.dtype()), mem_space, file_space, H5P_DEFAULT, rows.raw()) < 0)
    throw std::runtime_error("'" + path_ + "': cannot write rows of " + dataset);
}

RowLayout File::row_layout(const std::string& dataset, DType as) const {
  RowLayout out;
  const DatasetInfo meta = info(dataset);
  out.rows = meta.dims.empty() ? 0 : meta.dims[0];
  out.row_bytes =
      static_cast<int64_t>(dtype_size(as)) * (out.rows ? shape_numel(meta.dims) / out.rows : 0);
  Id ds(H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose);
  Id type(H5Dget_type(ds), H5Tclose);
  Id dcpl(H5Dget_create_plist(ds), H5Pclose);
  if (H5Tequal(type, memory_type(as)) <= 0) {
    out.why_not = "stored as another element type than " + std::string(dtype_name(as));
    return out;
  }
  if (out.rows == 0) {
    out.why_not = "no rows";
    return out;
  }
  const H5D_layout_t layout = H5Pget_layout(dcpl);
  if (layout == H5D_CONTIGUOUS) {
    const haddr_t at = H5Dget_offset(ds);
    if (at == HADDR_UNDEF) {
      out.why_not = "not written yet";
      return out;
    }
    out.chunk_offsets = {static_cast<uint64_t>(at)};
    out.direct = true;
    return out;
  }
  if (layout != H5D_CHUNKED) {
    out.why_not = "neither contiguous nor chunked";
    return out;
  }
  if (H5Pget_nfilters(dcpl) > 0) {
    out.why_not = "compressed (tern-data synth writes streamable files; see docs/data.md)";
    return out;
  }
  std::vector<hsize_t> chunk(meta.dims.size());
  H5Pget_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data());
  for (size_t d = 1; d < chunk.size(); ++d)
    if (chunk[d] != static_cast<hsize_t>(meta.dims[d])) {
      out.why_not = "chunks do not hold whole rows";
      return out;
    }
  out.chunk_rows = static_cast<int64_t>(chunk[0]);
  Id space(H5Dget_space(ds), H5Sclose);
  hsize_t n = 0;
  const int64_t want = (out.rows + out.chunk_rows - 1) / out.chunk_rows;
  if (H5Dget_num_chunks(ds, space, &n) < 0 || static_cast<int64_t>(n) != want) {
    out.why_not = "not every chunk is written";
    return out;
  }
  out.chunk_offsets.assign(want, 0);
  std::vector<hsize_t> coords(meta.dims.size());
  for (hsize_t i = 0; i < n; ++i) {
    unsigned mask = 0;
    haddr_t addr = HADDR_UNDEF;
    hsize_t size = 0;
    if (H5Dget_chunk_info(ds, space, i, coords.data(), &mask, &addr, &size) < 0 ||
        addr == HADDR_UNDEF) {
      out.why_not = "a chunk cannot be located";
      return out;
    }
    out.chunk_offsets[coords[0] / chunk[0]] = static_cast<uint64_t>(addr);
  }
  out.direct = true;
  return out;
}

void File::write_attr(const std::string& object, const std::string& name,
                      const std::string& value) {
  Id type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type, std::max<size_t>(value.size(), 1));
  H5Tset_cset(type, H5T_CSET_UTF8);
  Id space(H5Screate(H5S_SCALAR), H5Sclose);
  Id attr(H5Acreate_by_name(id_, object.c_str(), name.c_str(), type, space, H5P_DEFAULT,
                            H5P_DEFAULT, H5P_DEFAULT),
          H5Aclose);
  if (attr < 0 || H5Awrite(attr, type, value.c_str()) < 0)
    throw std::runtime_error("'" + path_ + "': cannot write attribute " + object + "@" + name);
}

void File::write_attr(const std::string& object, const std::string& name, double value) {
  Id space(H5Screate(H5S_SCALAR), H5Sclose);
  Id attr(H5Acreate_by_name(id_, object.c_str(), name.c_str(), H5T_NATIVE_DOUBLE, space,
                            H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
          H5Aclose);
  if (attr < 0 || H5Awrite(attr, H5T_NATIVE_DOUBLE, &value) < 0)
    throw std::runtime_error("'" + path_ + "': cannot write attribute " + object + "@" + name);
}

bool File::has_attr(const std::string& object, const std::string& name) const {
  return H5Aexists_by_name(id_, object.c_str(), name.c_str(), H5P_DEFAULT) > 0;
}

std::string File::read_attr_string(const std::string& object, const std::string& name) const {
  if (H5Aexists_by_name(id_, object.c_str(), name.c_str(), H5P_DEFAULT) <= 0)
    throw InputError(where(object) + " has no attribute '" + name + "'");
  Id attr(H5Aopen_by_name(id_, object.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  Id type(H5Aget_type(attr), H5Tclose);
  if (H5Tget_class(type) != H5T_STRING)
    throw InputError(where(object) + ": attribute '" + name + "' is not a string");
  if (H5Tis_variable_str(type) > 0) {
    char* buf = nullptr;
    Id mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem, H5T_VARIABLE);
    if (H5Aread(attr, mem, &buf) < 0) throw InputError(where(object) + ": cannot read " + name);
    std::string out = buf ? buf : "";
    H5free_memory(buf);
    return out;
  }
  std::string out(H5Tget_size(type), '\0');
  if (H5Aread(attr, type, out.data()) < 0)
    throw InputError(where(object) + ": cannot read " + name);
  out.resize(out.find('\0') == std::string::npos ? out.size() : out.find('\0'));
  return out;
}

}  // namespace tern::h5
