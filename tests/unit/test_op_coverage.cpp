// Every op of the op list (include/tern/ops.h) has a case in the backend-consistency test
// (tests/cuda/test_backend_consistency.cpp), which runs it on the GPU and on the CPU and compares.
// That test skips without a GPU, so this check reads the sources instead: it runs everywhere, and
// an op added to ops.h without a GPU-against-CPU case fails here first. A name counts as covered
// when the consistency test calls it (`ops::name`, outside comments).
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

namespace {

std::string read(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << "cannot read " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The text without // and /* */ comments (no string literal in these files holds either).
std::string strip_comments(const std::string& s) {
  static const std::regex comments(R"(//[^\n]*|/\*[\s\S]*?\*/)");
  return std::regex_replace(s, comments, " ");
}

// The functions ops.h declares in namespace tern::ops: declarations start at the beginning of a
// line with a return type, then the name and "(".
std::set<std::string> declared_ops() {
  const std::string header = strip_comments(read(TERN_SOURCE_DIR "/include/tern/ops.h"));
  static const std::regex decl(
      R"((?:^|\n)(?:const\s+)?[A-Za-z_][\w:]*[\s*&]+([a-z_][a-z0-9_]*)\()");
  std::set<std::string> names;
  for (std::sregex_iterator it(header.begin(), header.end(), decl), end; it != end; ++it)
    names.insert((*it)[1]);
  return names;
}

// Not compute ops: no device, nothing to compare.
const std::set<std::string> kNotOps = {
    "flush_denormals_on_this_thread",  // sets the calling thread's FPU mode
    "activation_name",                 // a name for messages
};

TEST(OpCoverage, TheOpListIsRead) {
  // The parse itself: a change of ops.h's layout that hid every op would make the next test pass
  // vacuously.
  const auto ops = declared_ops();
  for (const char* known : {"gemm", "attention_backward", "convert", "adamw_update"})
    EXPECT_TRUE(ops.count(known)) << known << " not found among the declarations of ops.h";
  EXPECT_GE(ops.size(), 25u);
}

TEST(OpCoverage, EveryOpHasABackendConsistencyCase) {
  const std::string test =
      strip_comments(read(TERN_SOURCE_DIR "/tests/cuda/test_backend_consistency.cpp"));
  std::string missing;
  for (const std::string& op : declared_ops()) {
    if (kNotOps.count(op)) continue;
    const std::regex call("ops::" + op + R"(\b)");
    if (!std::regex_search(test, call)) missing += " " + op;
  }
  EXPECT_TRUE(missing.empty())
      << "ops of include/tern/ops.h with no case in tests/cuda/test_backend_consistency.cpp:"
      << missing;
}

}  // namespace
