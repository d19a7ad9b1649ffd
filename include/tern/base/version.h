#pragma once

namespace tern {
// "<semver> (<git commit>)", fixed at configure time.
const char* version_string();
}  // namespace tern
