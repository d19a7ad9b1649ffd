#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "tern/io/store.h"

#include "tern/base/error.h"

namespace fs = std::filesystem;

namespace tern {
namespace {

constexpr const char* kTempMarker = ".tern-tmp.";

std::string errno_text() { return std::strerror(errno); }

// A file descriptor closed on scope exit.
struct Fd {
  int fd;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

void fsync_dir(const fs::path& dir) {
  Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY));
  if (d.fd >= 0) ::fsync(d.fd);
}

// Local filesystem: atomic by temp file + fsync + rename (or link, for create-if-absent) + fsync
// of the folder, so a crash leaves the old object or the whole new one.
class LocalStore final : public ObjectStore {
 public:
  explicit LocalStore(fs::path root) : root_(std::move(root)) {}
  std::string uri() const override { return "file://" + fs::absolute(root_).string(); }

  void put(const std::string& key, const void* data, size_t size) override {
    const fs::path target = path_of(key);
    const fs::path tmp = write_temp(target, data, size);
    if (::rename(tmp.c_str(), target.c_str()) != 0) {
      const std::string err = errno_text();
      ::unlink(tmp.c_str());
      throw StoreError("put " + where(key) + ": rename failed: " + err);
    }
    fsync_dir(target.parent_path());
  }

  bool put_if_absent(const std::string& key, const void* data, size_t size) override {
    const fs::path target = path_of(key);
    const fs::path tmp = write_temp(target, data, size);
    // link() fails with EEXIST if the name exists: an atomic create-if-absent.
    const int rc = ::link(tmp.c_str(), target.c_str());
    const int err = errno;
    ::unlink(tmp.c_str());
    if (rc != 0 && err == EEXIST) return false;
    if (rc != 0) throw StoreError("put_if_absent " + where(key) + ": " + std::strerror(err));
    fsync_dir(target.parent_path());
    return true;
  }

  std::string get(const std::string& key) override {
    auto info = head(key);
    if (!info) throw StoreError("get " + where(key) + ": no such object");
    return get_range(key, 0, info->size);
  }

  std::string get_range(const std::string& key, uint64_t offset, uint64_t length) override {
    Fd f(::open(path_of(key).c_str(), O_RDONLY | O_CLOEXEC));
    if (f.fd < 0) throw StoreError("get " + where(key) + ": " + errno_text());
    std::string out(length, '\0');
    uint64_t done = 0;
    while (done < length) {
      const ssize_t n =
          ::pread(f.fd, out.data() + done, length - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw StoreError("get " + where(key) + ": " + errno_text());
      if (n == 0) break;
      done += static_cast<uint64_t>(n);
    }
    out.resize(done);
    return out;
  }

  std::optional<ObjectInfo> head(const std::string& key) override {
    struct stat st;
    if (::stat(path_of(key).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
    return ObjectInfo{key, static_cast<uint64_t>(st.st_size), static_cast<int64_t>(st.st_mtime)};
  }

  std::vector<ObjectInfo> list(const std::string& prefix) override {
    std::vector<ObjectInfo> out;
    // Walk only the deepest folder named by the prefix, not the whole store.
    const auto slash = prefix.rfind('/');
    const fs::path start = slash == std::string::npos ? root_ : root_ / prefix.substr(0, slash);
    std::error_code ec;
    if (!fs::is_directory(start, ec)) return out;
    for (auto it = fs::recursive_directory_iterator(start, ec); !ec && it != fs::end(it);
         it.increment(ec)) {
      if (!it->is_regular_file(ec)) continue;
      const std::string key = fs::relative(it->path(), root_).generic_string();
      if (key.compare(0, prefix.size(), prefix) != 0 || key.find(kTempMarker) != std::string::npos)
        continue;
      if (auto info = head(key)) out.push_back(*info);
    }
    if (ec) throw StoreError("list " + where(prefix) + ": " + ec.message());
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.key < b.key; });
    return out;
  }

  void remove(const std::string& key) override {
    const fs::path target = path_of(key);
    if (::unlink(target.c_str()) != 0 && errno != ENOENT)
      throw StoreError("remove " + where(key) + ": " + errno_text());
    // Drop folders left empty, up to the root, so a removed checkpoint leaves nothing behind.
    std::error_code ec;
    for (fs::path dir = target.parent_path();
         dir != root_ && dir.string().size() > root_.string().size(); dir = dir.parent_path())
      if (!fs::remove(dir, ec)) break;
  }

 private:
  fs::path path_of(const std::string& key) const {
    if (key.empty() || key.front() == '/' || key.find("..") != std::string::npos)
      throw StoreError("invalid object key '" + key + "'");
    return root_ / key;
  }
  std::string where(const std::string& key) const { return uri() + "/" + key; }

  fs::path write_temp(const fs::path& target, const void* data, size_t size) {
    std::error_code ec;
    fs::create_directories(target.parent_path(), ec);
    if (ec) throw StoreError("put " + target.string() + ": cannot create folder: " + ec.message());
    static std::atomic<uint64_t> counter{0};
    const fs::path tmp = target.string() + kTempMarker + std::to_string(::getpid()) + "." +
                         std::to_string(counter++);
    Fd f(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (f.fd < 0) throw StoreError("put " + target.string() + ": " + errno_text());
    const char* p = static_cast<const char*>(data);
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::write(f.fd, p + done, size - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const std::string err = errno_text();
        ::unlink(tmp.c_str());
        throw StoreError("put " + target.string() + ": write failed: " + err);
      }
      done += static_cast<size_t>(n);
    }
    if (::fsync(f.fd) != 0) {
      const std::string err = errno_text();
      ::unlink(tmp.c_str());
      throw StoreError("put " + target.string() + ": fsync failed: " + err);
    }
    return tmp;
  }

  fs::path root_;
};

}  // namespace

std::unique_ptr<ObjectStore> open_local_store(const std::string& root) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) throw StoreError("cannot create store folder '" + root + "': " + ec.message());
  return std::make_unique<LocalStore>(fs::absolute(root).lexically_normal());
}

StoreUri StoreUri::parse(const std::string& uri, const std::string& where) {
  StoreUri u;
  u.text = uri;
  const auto bad = [&](const std::string& what) { throw InputError(where + ": " + what); };
  if (uri.empty()) bad("empty; a path, file://PATH or s3://BUCKET/PREFIX");
  if (uri.rfind("s3://", 0) == 0) {
    u.kind = Kind::s3;
    const std::string rest = uri.substr(5);
    const auto slash = rest.find('/');
    u.bucket = rest.substr(0, slash);
    u.prefix = slash == std::string::npos ? "" : rest.substr(slash + 1);
    while (!u.prefix.empty() && u.prefix.back() == '/') u.prefix.pop_back();
    if (u.bucket.empty()) bad("names no bucket (s3://BUCKET/PREFIX)");
    return u;
  }
  if (uri.rfind("file://", 0) == 0) {
    u.path = uri.substr(7);
    if (u.path.empty()) bad("names no folder (file://PATH)");
    return u;
  }
  if (uri.find("://") != std::string::npos)
    bad("unknown scheme " + uri.substr(0, uri.find("://") + 3) + " (use a path, file:// or s3://)");
  u.path = uri;
  return u;
}

std::unique_ptr<ObjectStore> open_store(const StoreUri& uri, double retry_seconds) {
  if (uri.kind == StoreUri::Kind::s3) {
    S3Options options = S3Options::from_env(uri.bucket, uri.prefix);
    options.max_retry_seconds = retry_seconds;
    return open_s3_store(options);
  }
  return open_local_store(uri.path);
}

std::unique_ptr<ObjectStore> open_store(const std::string& uri, double retry_seconds) {
  return open_store(StoreUri::parse(uri, "store URI '" + uri + "'"), retry_seconds);
}

}  // namespace tern
