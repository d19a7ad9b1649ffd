#pragma once
// A small pool of worker threads for the CPU ops that OpenBLAS does not cover (attention's
// per-head work, layer norm, activations, the optimizer). Work is split into independent pieces
// (rows, heads, element ranges) whose results do not depend on which thread computes them, so
// results are bitwise the same at any thread count.
#include <cstdint>
#include <functional>

namespace tern::cpu {

// Threads the CPU ops use (the caller counts as one); set together with the BLAS threads.
void set_op_threads(int threads);
int op_threads();

// fn(begin, end) over [0, n) in chunks of at least `grain` items, spread over op_threads()
// threads; returns when all are done. Runs inline when there is one thread or little work.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace tern::cpu
