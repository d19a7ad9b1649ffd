#include "tern/serve/cache.h"

#include <cstring>

namespace tern::serve {

namespace {
// Bookkeeping per entry beyond its key and output: list node, map slot, control blocks.
constexpr size_t kEntryOverhead = 128;
}  // namespace

std::string ResponseCache::key(const std::string& model, int64_t version, int64_t rows,
                               const InputRows& input) {
  std::string k;
  k.reserve(model.size() + 2 + 2 * sizeof(int64_t) + input.values() * 4);
  k += model;
  k += '\0';  // model names hold no NUL, so "a" + version cannot read as "a\0..." + another
  k.append(reinterpret_cast<const char*>(&version), sizeof version);
  k.append(reinterpret_cast<const char*>(&rows), sizeof rows);
  input.append_bytes(k);
  return k;
}

CachedOutput ResponseCache::find(const std::string& key) {
  std::lock_guard lock(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->output;
}

void ResponseCache::insert(std::string key, CachedOutput output) {
  const size_t bytes = key.size() + output->size() * sizeof(float) + kEntryOverhead;
  if (bytes > capacity_ / 8) return;
  std::lock_guard lock(mu_);
  if (index_.count(key)) return;  // another request with the same input got here first
  lru_.push_front(Entry{std::move(key), std::move(output), bytes});
  index_.emplace(lru_.front().key, lru_.begin());
  bytes_ += bytes;
  while (bytes_ > capacity_) {
    const Entry& victim = lru_.back();
    bytes_ -= victim.bytes;
    index_.erase(victim.key);
    lru_.pop_back();
    ++evictions_;
  }
}

CacheCounters ResponseCache::counters() const {
  std::lock_guard lock(mu_);
  CacheCounters c;
  c.entries = lru_.size();
  c.bytes = bytes_;
  c.capacity = capacity_;
  c.evictions = evictions_;
  return c;
}

}  // namespace tern::serve
