#pragma once
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tern/serve/input_rows.h"
#include "tern/serve/metrics.h"

// The response cache: an LRU map from (model, version, input bytes) to the model's output,
// bounded in bytes. It keeps outputs, not encoded responses, so one entry serves JSON and
// binary clients and any request id.
namespace tern::serve {

using CachedOutput = std::shared_ptr<const std::vector<float>>;

class ResponseCache {
 public:
  explicit ResponseCache(size_t capacity_bytes) : capacity_(capacity_bytes) {}

  // The key of a request: the whole input, so two requests share an entry only when their
  // inputs are bit-identical (a hash alone could collide and answer with another's output).
  static std::string key(const std::string& model, int64_t version, int64_t rows,
                         const InputRows& input);

  CachedOutput find(const std::string& key);
  // Entries larger than an eighth of the capacity are not kept: one would evict many.
  void insert(std::string key, CachedOutput output);
  CacheCounters counters() const;

 private:
  struct Entry {
    std::string key;
    CachedOutput output;
    size_t bytes;
  };
  size_t capacity_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<std::string_view, std::list<Entry>::iterator> index_;  // views of Entry::key
  size_t bytes_ = 0;
  uint64_t evictions_ = 0;
};

}  // namespace tern::serve
