#include "tern/dist/sharding.h"

#include <algorithm>
#include <stdexcept>

namespace tern {

FlatSharding::FlatSharding(int64_t total, int world) {
  if (world < 1 || total < 0) throw std::invalid_argument("FlatSharding: bad world or size");
  bounds_.assign(world + 1, 0);
  for (int r = 1; r < world; ++r) bounds_[r] = std::min(total, total * r / world / kAlign * kAlign);
  bounds_[world] = total;
}

std::vector<int64_t> FlatSharding::counts_within(int64_t lo, int64_t hi) const {
  std::vector<int64_t> out(world());
  for (int r = 0; r < world(); ++r)
    out[r] = std::max<int64_t>(0, std::min(hi, end(r)) - std::max(lo, begin(r)));
  return out;
}

int FlatSharding::num_chunks(int64_t chunk) const {
  int64_t most = 0;
  for (int r = 0; r < world(); ++r) most = std::max(most, size(r));
  return static_cast<int>((most + chunk - 1) / chunk);
}

std::pair<int64_t, int64_t> FlatSharding::chunk_of(int r, int c, int64_t chunk) const {
  const int64_t first = std::min(end(r), begin(r) + c * chunk);
  return {first, std::min(end(r), first + chunk)};
}

}  // namespace tern
