#include <gtest/gtest.h>

#include <fstream>

#include "tern/base/error.h"
#include "tern/train/train_config.h"
#include "test_util.h"

namespace tern {
namespace {

struct Parsed {
  TrainerConfig cfg;
  OptionSet options{"tern-train"};
  Parsed() { register_trainer_options(options, cfg); }
  OptionSet::Outcome parse(std::vector<std::string> args) {
    std::vector<const char*> argv{"tern-train"};
    for (const auto& a : args) argv.push_back(a.c_str());
    return options.parse(static_cast<int>(argv.size()), argv.data());
  }
};

std::string write_ini(const std::string& name, const std::string& text) {
  std::string path = testing::temp_path(name);
  std::ofstream(path) << text;
  return path;
}

std::string error_of(std::vector<std::string> args) {
  Parsed p;
  try {
    p.parse(args);
    validate_trainer_config(p.options, p.cfg);
  } catch (const InputError& e) {
    return e.what();
  }
  return "no error";
}

const char* kGood = R"([model]
layer = linear out=16
layer = relu
layer = linear out=3
[data]
path = some.h5
[train]
steps = 20
batch_size = 8
)";

TEST(Config, ReadsFileWithRepeatedLayerKey) {
  Parsed p;
  ASSERT_EQ(p.parse({"--config", write_ini("good.ini", kGood)}), OptionSet::Outcome::run);
  validate_trainer_config(p.options, p.cfg);
  EXPECT_EQ(p.cfg.model.layers,
            (std::vector<std::string>{"linear out=16", "relu", "linear out=3"}));
  EXPECT_EQ(p.cfg.train.steps, 20);
  EXPECT_EQ(p.cfg.train.seed, 1234) << "defaults stay";
}

TEST(Config, CommandLineWins) {
  Parsed p;
  std::string ini = write_ini("good.ini", kGood);
  p.parse(
      {"--config=" + ini, "--train.steps=7", "--optim.lr", "0.5", "--model.layer=linear out=2"});
  EXPECT_EQ(p.cfg.train.steps, 7);
  EXPECT_FLOAT_EQ(p.cfg.optim.lr, 0.5f);
  EXPECT_EQ(p.cfg.model.layers, std::vector<std::string>{"linear out=2"}) << "replaces the list";
  EXPECT_EQ(p.options.origin("train.steps"), "command line");
  EXPECT_EQ(p.options.origin("train.batch_size"), ini);
  EXPECT_EQ(p.options.origin("train.seed"), "default");
}

TEST(Config, UnknownKeyInFileNamesKeyValueAndFile) {
  std::string ini = write_ini("unknown.ini", std::string(kGood) + "[optim]\nlearning_rate = 0.1\n");
  std::string err = error_of({"--config", ini});
  EXPECT_NE(err.find("unknown key 'optim.learning_rate'"), std::string::npos) << err;
  EXPECT_NE(err.find("0.1"), std::string::npos) << err;
  EXPECT_NE(err.find(ini), std::string::npos) << err;
}

TEST(Config, UnknownKeyOnCommandLine) {
  std::string err = error_of({"--config", write_ini("good.ini", kGood), "--train.stepz=3"});
  EXPECT_NE(err.find("command line"), std::string::npos) << err;
  EXPECT_NE(err.find("train.stepz"), std::string::npos) << err;
}

TEST(Config, BadValueNamesKeyValueAndFile) {
  std::string ini = write_ini("bad.ini", std::string(kGood) + "[optim]\nlr = fast\n");
  std::string err = error_of({"--config", ini});
  EXPECT_NE(err.find("optim.lr"), std::string::npos) << err;
  EXPECT_NE(err.find("fast"), std::string::npos) << err;
  EXPECT_NE(err.find(ini), std::string::npos) << err;
}

TEST(Config, OutOfRangeValueNamesOrigin) {
  std::string ini = write_ini("good.ini", kGood);
  std::string err = error_of({"--config", ini, "--train.batch_size=0"});
  EXPECT_NE(err.find("train.batch_size=0 (from command line): must be >= 1"), std::string::npos)
      << err;
  err = error_of(
      {"--config", write_ini("sched.ini", std::string(kGood) + "[optim]\nschedule = step\n")});
  EXPECT_NE(err.find("optim.schedule=step (from"), std::string::npos) << err;
  EXPECT_NE(err.find("expected cosine, linear or constant"), std::string::npos) << err;
}

TEST(Config, MissingFile) {
  std::string err = error_of({"--config", "/nonexistent/x.ini"});
  EXPECT_NE(err.find("'/nonexistent/x.ini' cannot be read"), std::string::npos) << err;
}

TEST(Config, HelpListsEveryKeyWithDefault) {
  Parsed p;
  EXPECT_EQ(p.parse({"--help"}), OptionSet::Outcome::help);
  const std::string help = p.options.help_text();
  for (const char* key : {"model.layer", "data.path", "optim.lr", "train.steps", "train.batch_size",
                          "train.seed", "train.eval_every", "run.dir", "dist.bucket_mb"})
    EXPECT_NE(help.find(std::string("--") + key), std::string::npos) << key;
  EXPECT_NE(help.find("(=1000)"), std::string::npos) << "defaults shown";
}

TEST(Config, EffectiveIniRoundTrips) {
  Parsed p;
  p.parse({"--config", write_ini("good.ini", kGood), "--optim.lr=0.25"});
  std::string again = write_ini("effective.ini", p.options.effective_ini());
  Parsed q;
  q.parse({"--config", again});
  EXPECT_EQ(q.cfg.model.layers, p.cfg.model.layers);
  EXPECT_FLOAT_EQ(q.cfg.optim.lr, 0.25f);
  EXPECT_EQ(q.cfg.data.path, "some.h5");
}

}  // namespace
}  // namespace tern
