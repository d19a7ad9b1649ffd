#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

// Object storage behind one small interface (LevelDB's Env, TensorFlow's FileSystem): local disk
// and S3 are the same code path above it. Keys are '/'-separated paths relative to the store's
// root (the folder, or s3://bucket/prefix).
namespace tern {

struct ObjectInfo {
  std::string key;    // relative to the store root
  uint64_t size = 0;  // bytes
  int64_t mtime = 0;  // seconds since the epoch
};

// A store operation that failed for good (after retries): names the operation and the key,
// never credentials.
class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ObjectStore {
 public:
  virtual ~ObjectStore() = default;
  // The store's URI, without credentials.
  virtual std::string uri() const = 0;

  // Creates or replaces `key` atomically: readers see the old object or the whole new one.
  // Large objects go up in parallel parts where the store supports it.
  virtual void put(const std::string& key, const void* data, size_t size) = 0;
  // Creates `key` only if it does not exist; false (and nothing written) if it does.
  virtual bool put_if_absent(const std::string& key, const void* data, size_t size) = 0;
  // The whole object; StoreError if it does not exist.
  virtual std::string get(const std::string& key) = 0;
  // Bytes [offset, offset + length) of the object.
  virtual std::string get_range(const std::string& key, uint64_t offset, uint64_t length) = 0;
  virtual std::optional<ObjectInfo> head(const std::string& key) = 0;
  // Every object whose key starts with `prefix`, sorted by key.
  virtual std::vector<ObjectInfo> list(const std::string& prefix) = 0;
  // Removing a missing key is not an error.
  virtual void remove(const std::string& key) = 0;
};

// "s3://bucket/prefix" (endpoint, region and credentials from the AWS environment variables),
// "file:///abs/path" or a plain path. retry_seconds bounds the retries of one S3 operation.
// A store's URI, parsed once for every user (the trainer's checkpoint.uri and
// checkpoint.resume, tern-ckpt, the serving repository): a path or file://PATH (a folder), or
// s3://BUCKET[/PREFIX].
struct StoreUri {
  enum class Kind { local, s3 };
  Kind kind = Kind::local;
  std::string text;            // as given
  std::string path;            // local: the folder
  std::string bucket, prefix;  // s3: prefix without a trailing '/'
  // InputError (a usage error) "<where>: <what is wrong>" for an empty URI, an unknown scheme or
  // an s3:// URI without a bucket; `where` names the setting and its value (OptionSet::describe).
  static StoreUri parse(const std::string& uri, const std::string& where);
};
std::unique_ptr<ObjectStore> open_store(const StoreUri& uri, double retry_seconds = 60);
// parse(uri, "store URI '<uri>'"), then open_store.
std::unique_ptr<ObjectStore> open_store(const std::string& uri, double retry_seconds = 60);
std::unique_ptr<ObjectStore> open_local_store(const std::string& root);

// S3 settings, from the standard AWS environment variables unless given.
struct S3Options {
  std::string bucket, prefix;
  std::string endpoint;  // AWS_ENDPOINT_URL[_S3]; empty: https://s3.<region>.amazonaws.com
  std::string region;    // AWS_REGION, AWS_DEFAULT_REGION; default us-east-1
  std::string access_key, secret_key, session_token;
  bool path_style = false;       // bucket in the path instead of the host name
  uint64_t part_size = 8 << 20;  // multipart part size; objects above it go up in parts
  int parallel_parts = 8;
  double max_retry_seconds = 60;  // total time budget for one operation's retries
  double request_timeout_seconds = 60;
  static S3Options from_env(const std::string& bucket, const std::string& prefix);
};
std::unique_ptr<ObjectStore> open_s3_store(const S3Options& options);

}  // namespace tern
