// Every op of the op list (include/tern/compute/ops.h) has a case in the backend-consistency test
// (tests/cuda/test_backend_consistency.cpp), which runs it on the GPU and on the CPU and compares,
// and reaches the backend table (include/tern/compute/backend.h) rather than a path of its own.
// The consistency test skips without a GPU, so these checks read the sources instead: they run
// everywhere, and an op added without a GPU-against-CPU case, or a table entry no op calls, fails
// here first. (A backend that lacks an entry of the table does not compile.) A name counts as
// covered when the consistency test calls it (`ops::name`, outside comments).
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
  const std::string header = strip_comments(read(TERN_SOURCE_DIR "/include/tern/compute/ops.h"));
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
  EXPECT_TRUE(missing.empty()) << "ops of include/tern/compute/ops.h with no case in "
                                  "tests/cuda/test_backend_consistency.cpp:"
                               << missing;
}

// The ops' sources: the op list's checks and dispatch.
std::string op_sources() {
  std::string all;
  for (const char* f : {"ops.cpp", "ops_spatial.cpp", "ops_sequence.cpp"})
    all += strip_comments(read(std::string(TERN_SOURCE_DIR "/src/compute/") + f));
  return all;
}

TEST(OpCoverage, EveryBackendEntryIsCalledByAnOpAndNoOpBypassesTheTable) {
  const std::string header =
      strip_comments(read(TERN_SOURCE_DIR "/include/tern/compute/backend.h"));
  const auto begin = header.find("class Backend {"), end = header.find("};", begin);
  ASSERT_NE(begin, std::string::npos);
  const std::string table = header.substr(begin, end - begin);
  static const std::regex entry(R"(virtual\s+[\w:<>]+[\s*&]+([a-z_][a-z0-9_]*)\()");
  std::set<std::string> entries;
  for (std::sregex_iterator it(table.begin(), table.end(), entry), e; it != e; ++it)
    entries.insert((*it)[1]);
  EXPECT_GE(entries.size(), 25u);
  const std::string ops = op_sources();
  std::string uncalled;
  for (const std::string& name : entries) {
    if (name == "name" || name == "supports_bf16") continue;
    if (!std::regex_search(ops, std::regex(R"(\bbe\.)" + name + R"(\()"))) uncalled += " " + name;
  }
  EXPECT_TRUE(uncalled.empty()) << "backend entries no op of src/compute/ops*.cpp calls:"
                                << uncalled;
  for (const char* bypass : {"#ifdef", "TERN_HAVE_CUDA", "cpu::", "cuda::"})
    EXPECT_EQ(ops.find(bypass), std::string::npos)
        << "src/compute/ops*.cpp holds '" << bypass << "': ops dispatch through the table only";
}

}  // namespace
