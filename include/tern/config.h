#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

#include "tern/checkpoint.h"
#include "tern/optim.h"

namespace tern {

// Keys named "section.key", read from an INI file ([section] key = value) given by --config and
// overridable on the command line as --section.key=value (the command line wins). Unknown keys
// and bad values are InputErrors naming the key, the value and where it came from.
class OptionSet {
 public:
  explicit OptionSet(std::string program);

  template <class T>
  void add(const std::string& key, T* target, const std::string& help) {
    add_value(key,
              boost::program_options::value<T>(target)->default_value(*target, format(*target)),
              help, [target] { return format(*target); });
  }
  // A key that may repeat (one value per line in the INI file, or per --key on the command
  // line); the command line replaces the file's list as a whole.
  void add_list(const std::string& key, std::vector<std::string>* target, const std::string& help);

  // Text printed after the keys in --help.
  void set_epilog(std::string text) { epilog_ = std::move(text); }

  enum class Outcome { run, help, version };
  Outcome parse(int argc, const char* const* argv);
  std::string help_text() const;

  // Where a key's value came from: "<file>", "command line" or "default".
  std::string origin(const std::string& key) const;
  // "key=value (from origin)": the start of every validation message.
  std::string describe(const std::string& key) const;
  // Every key with its effective value, as an INI file that reproduces this run.
  std::string effective_ini() const;
  const std::string& config_file() const { return config_file_; }

 private:
  template <class T>
  static std::string format(const T& v);
  void add_value(const std::string& key, const boost::program_options::value_semantic* sem,
                 const std::string& help, std::function<std::string()> show);
  boost::program_options::options_description& section(const std::string& key);

  std::string program_;
  std::string epilog_;
  std::string config_file_;
  std::vector<std::string> section_order_;
  std::map<std::string, std::unique_ptr<boost::program_options::options_description>> sections_;
  std::vector<std::pair<std::string, std::function<std::string()>>> keys_;
  std::map<std::string, std::string> origins_;
};

struct ModelConfig {
  std::vector<std::string> layers;
  std::string loss = "softmax_cross_entropy";
  int64_t input_dim = 0;  // 0: taken from the data file
};

struct DataConfig {
  std::string path;
  std::string normalize = "standard";  // standard | none
  int64_t prefetch = 4;                // batches prepared ahead per rank
  int64_t loader_threads = 0;          // copying one large batch; 0 = auto
  int64_t block_size = 0;              // token corpora: the context length
};

struct TrainConfig {
  int64_t steps = 1000;
  int64_t batch_size = 64;  // global, over all ranks and micro-batches
  int64_t accum_steps = 1;  // micro-batches per optimizer step
  int64_t seed = 1234;
  int64_t eval_every = 200;
  int64_t eval_batch_size = 1024;
  int64_t log_every = 10;
  std::string on_nonfinite = "error";  // error | skip
};

struct RunConfig {
  std::string dir;
  int64_t threads = 0;  // BLAS threads per rank; 0 = cores on this node / ranks on this node
  std::string log_level = "info";
  std::string progress = "auto";  // auto | on | off
  bool flush_denormals = true;
  std::string device = "auto";     // auto | cpu | cuda
  std::string precision = "fp32";  // fp32 | bf16
  bool tf32 = false;
};

struct DistConfig {
  std::string backend = "auto";  // auto | nccl | mpi | none
  double bucket_mb = 25.0;
  double timeout_seconds = 600.0;
};

// Everything tern-train reads.
struct TrainerConfig {
  ModelConfig model;
  DataConfig data;
  OptimConfig optim;
  TrainConfig train;
  RunConfig run;
  DistConfig dist;
  CheckpointConfig checkpoint;
};

// Registers every tern-train key on `options`; call validate_trainer_config after parsing.
void register_trainer_options(OptionSet& options, TrainerConfig& cfg);
void validate_trainer_config(const OptionSet& options, const TrainerConfig& cfg);

}  // namespace tern
