#pragma once
#include <cstdint>
#include <vector>

namespace tern {

// ZeRO-1's partition of a flat buffer of `total` elements over the ranks: rank r owns elements
// [begin(r), end(r)). Boundaries fall on multiples of kAlign (64 bytes of f32), so every slice
// starts where vector code and the GPU like it; the last rank takes what is left. The same
// partition splits the optimizer state, the reduced gradients, the parameter all-gather and what
// each rank writes to a checkpoint.
class FlatSharding {
 public:
  static constexpr int64_t kAlign = 16;
  FlatSharding() = default;
  FlatSharding(int64_t total, int world);

  int world() const { return static_cast<int>(bounds_.size()) - 1; }
  int64_t total() const { return bounds_.back(); }
  int64_t begin(int r) const { return bounds_[r]; }
  int64_t end(int r) const { return bounds_[r + 1]; }
  int64_t size(int r) const { return bounds_[r + 1] - bounds_[r]; }
  // How many elements of [lo, hi) each rank owns.
  std::vector<int64_t> counts_within(int64_t lo, int64_t hi) const;

  // The slices are updated and gathered in chunks of at most `chunk` elements, numbered alike on
  // every rank (a rank with less to do contributes nothing to the last ones).
  int num_chunks(int64_t chunk) const;
  // Chunk c of rank r's slice: [first, last) in the flat buffer.
  std::pair<int64_t, int64_t> chunk_of(int r, int c, int64_t chunk) const;

 private:
  std::vector<int64_t> bounds_{0, 0};
};

}  // namespace tern
