#pragma once
// tern's optional parts that bring heavy libraries with them (the CUDA backend, the NCCL
// communicator) are shared libraries of their own, loaded at run time only when used.

namespace tern {

// The address of `entry` in `library`, loaded (once per process; later calls reuse the handle)
// from $`env_override` when that is set, else from <this binary's folder>/../lib/, else from the
// loader's path (LD_LIBRARY_PATH, the system's folders). Throws std::runtime_error naming each
// path tried and the loader's messages, or the missing entry.
void* load_module_entry(const char* library, const char* entry, const char* env_override = nullptr);

}  // namespace tern
