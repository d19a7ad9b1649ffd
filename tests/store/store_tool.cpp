// Test-only command line over ObjectStore, for the interop checks against other S3 clients.
//
//   tern_store_tool [--part-size BYTES] [--parallel N] [--max-retry-seconds S] COMMAND ...
//     put URI KEY FILE | put-if-absent URI KEY FILE (exit 3: it existed) | get URI KEY FILE
//     list URI PREFIX ("KEY SIZE" lines) | head URI KEY | rm URI KEY
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "tern/io/store.h"

namespace {

std::unique_ptr<tern::ObjectStore> open(const std::string& uri, const tern::S3Options& knobs) {
  if (uri.rfind("s3://", 0) != 0) return tern::open_store(uri);
  const std::string rest = uri.substr(5);
  const auto slash = rest.find('/');
  tern::S3Options o = tern::S3Options::from_env(
      rest.substr(0, slash), slash == std::string::npos ? "" : rest.substr(slash + 1));
  o.part_size = knobs.part_size;
  o.parallel_parts = knobs.parallel_parts;
  o.max_retry_seconds = knobs.max_retry_seconds;
  return tern::open_s3_store(o);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

int usage() {
  std::cerr << "usage: tern_store_tool [--part-size B] [--parallel N] [--max-retry-seconds S]\n"
               "  put|put-if-absent URI KEY FILE | get URI KEY FILE | list URI PREFIX | head URI "
               "KEY | rm URI KEY\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  tern::S3Options knobs;
  while (args.size() >= 2 && args[0].rfind("--", 0) == 0) {
    if (args[0] == "--part-size")
      knobs.part_size = std::stoull(args[1]);
    else if (args[0] == "--parallel")
      knobs.parallel_parts = std::stoi(args[1]);
    else if (args[0] == "--max-retry-seconds")
      knobs.max_retry_seconds = std::stod(args[1]);
    else
      return usage();
    args.erase(args.begin(), args.begin() + 2);
  }
  if (args.size() < 3) return usage();
  const std::string& cmd = args[0];
  try {
    auto store = open(args[1], knobs);
    const std::string& key = args[2];
    if ((cmd == "put" || cmd == "put-if-absent") && args.size() == 4) {
      const std::string data = read_file(args[3]);
      if (cmd == "put")
        store->put(key, data.data(), data.size());
      else if (!store->put_if_absent(key, data.data(), data.size()))
        return 3;
    } else if (cmd == "get" && args.size() == 4) {
      const std::string data = store->get(key);
      std::ofstream(args[3], std::ios::binary).write(data.data(), std::streamsize(data.size()));
    } else if (cmd == "list") {
      for (const auto& o : store->list(key)) std::cout << o.key << " " << o.size << "\n";
    } else if (cmd == "head") {
      const auto info = store->head(key);
      if (!info) return 4;
      std::cout << info->key << " " << info->size << " " << info->mtime << "\n";
    } else if (cmd == "rm") {
      store->remove(key);
    } else {
      return usage();
    }
  } catch (const std::exception& e) {
    std::cerr << "tern_store_tool: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
