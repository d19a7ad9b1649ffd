#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <set>

#include "tern/base/error.h"
#include "tern/io/dataset.h"
#include "tern/io/hdf5_file.h"
#include "test_util.h"

namespace tern {
namespace {

// A small valid file, which each test then breaks in one way.
struct FileSpec {
  int64_t rows = 20, features = 4;
  bool float_labels = false;
  Shape x_shape;  // overrides [rows, features]
  float poison = 0;
  int64_t poison_at = -1;
  int32_t bad_label = 0;
  int64_t bad_label_at = -1;
  bool skip_train_y = false;
};

std::string write(const std::string& name, const FileSpec& s) {
  std::string path = testing::temp_path(name);
  h5::File f = h5::File::create(path);
  Tensor x = testing::random_tensor(s.x_shape.empty() ? Shape{s.rows, s.features} : s.x_shape, 1);
  if (s.poison_at >= 0) x.data<float>()[s.poison_at] = s.poison;
  f.write("/train/x", x);
  if (!s.skip_train_y) {
    if (s.float_labels) {
      f.write("/train/y", Tensor::zeros({s.rows}));
    } else {
      Tensor y = Tensor::empty({s.rows}, DType::i32);
      for (int64_t i = 0; i < s.rows; ++i) y.data<int32_t>()[i] = static_cast<int32_t>(i % 3);
      if (s.bad_label_at >= 0) y.data<int32_t>()[s.bad_label_at] = s.bad_label;
      f.write("/train/y", y);
    }
  }
  return path;
}

std::string load_error(const std::string& path, DataExpectation e = {4, true, 3, 0}) {
  try {
    Dataset::load(path, e);
  } catch (const InputError& err) {
    return err.what();
  }
  return "no error";
}

TEST(DataValidation, AcceptsGoodFile) {
  Dataset d = Dataset::load(write("good.h5", {}), {4, true, 3, 0});
  EXPECT_EQ(d.train.rows(), 20);
  EXPECT_FALSE(d.has_val);
}

TEST(DataValidation, NaNNamesDatasetRowAndColumn) {
  FileSpec s;
  s.poison = NAN;
  s.poison_at = 4 * 7 + 2;
  std::string err = load_error(write("nan.h5", s));
  EXPECT_NE(err.find("dataset /train/x: row 7, column 2 is NaN"), std::string::npos) << err;
}

TEST(DataValidation, InfinityIsRejected) {
  FileSpec s;
  s.poison = INFINITY;
  s.poison_at = 5;
  EXPECT_NE(load_error(write("inf.h5", s)).find("row 1, column 1 is infinite"), std::string::npos);
}

TEST(DataValidation, LabelOutOfRange) {
  FileSpec s;
  s.bad_label = 3;
  s.bad_label_at = 11;
  std::string err = load_error(write("label.h5", s));
  EXPECT_NE(err.find("dataset /train/y: row 11 has label 3, outside [0, 3)"), std::string::npos)
      << err;
}

TEST(DataValidation, WrongFeatureCount) {
  FileSpec s;
  s.features = 5;
  std::string err = load_error(write("shape.h5", s));
  EXPECT_NE(err.find("dataset /train/x: rows have 5 features, the model expects 4"),
            std::string::npos)
      << err;
}

TEST(DataValidation, WrongLabelDtype) {
  FileSpec s;
  s.float_labels = true;
  std::string err = load_error(write("dtype.h5", s));
  EXPECT_NE(err.find("dataset /train/y: expected integer class labels, found float"),
            std::string::npos)
      << err;
}

TEST(DataValidation, MissingDatasetAndFile) {
  FileSpec s;
  s.skip_train_y = true;
  EXPECT_NE(load_error(write("missing.h5", s)).find("dataset /train/y: missing"),
            std::string::npos);
  EXPECT_NE(
      load_error("/nonexistent.h5").find("'/nonexistent.h5' is missing or is not an HDF5 file"),
      std::string::npos);
}

TEST(DataValidation, RowCountMismatch) {
  FileSpec s;
  s.x_shape = {19, 4};
  EXPECT_NE(load_error(write("rows.h5", s)).find("has 20 rows but /train/x has 19"),
            std::string::npos);
}

TEST(Sampler, PermutationDependsOnlyOnSeedAndEpoch) {
  Sampler a(50, 7), b(50, 7), c(50, 8);
  const auto& p0 = a.permutation(0);
  std::set<int64_t> seen(p0.begin(), p0.end());
  EXPECT_EQ(seen.size(), 50u);
  EXPECT_EQ(*seen.begin(), 0);
  EXPECT_EQ(*seen.rbegin(), 49);
  EXPECT_EQ(b.permutation(3), a.permutation(3));
  const std::vector<int64_t> e1 = a.permutation(1), e0 = a.permutation(0);
  EXPECT_NE(e1, e0);
  EXPECT_NE(c.permutation(0), e0);
  EXPECT_EQ(a.sample_at(50 * 3 + 17), b.permutation(3)[17]);
}

TEST(Sampler, EvenShareCoversEverything) {
  for (int64_t total : {0, 1, 7, 64, 65})
    for (int64_t parts : {1, 2, 3, 5}) {
      int64_t expect = 0;
      for (int64_t p = 0; p < parts; ++p) {
        auto [b, e] = even_share(total, p, parts);
        EXPECT_EQ(b, expect);
        EXPECT_LE(e - b, total / parts + 1);
        expect = e;
      }
      EXPECT_EQ(expect, total);
    }
}

// The rows every rank gets, put together, are the 1-rank batch, for any W and accumulation.
TEST(Loader, RanksTogetherSeeTheGlobalBatch) {
  Split split;
  split.name = "train";
  const int64_t rows = 37;
  split.x = Tensor::empty({rows, 2});
  split.y = Tensor::empty({rows}, DType::i32);
  for (int64_t i = 0; i < rows; ++i) {
    split.x.data<float>()[2 * i] = static_cast<float>(i);
    split.x.data<float>()[2 * i + 1] = -static_cast<float>(i);
    split.y.data<int32_t>()[i] = static_cast<int32_t>(i);
  }
  const int64_t B = 13, steps = 6;
  auto collect = [&](int64_t world, int64_t accum) {
    std::vector<std::vector<int32_t>> per_step(steps);
    for (int64_t r = 0; r < world; ++r) {
      Loader loader(split, {B, accum, r, world, 2, 0, 99, 0, nullptr});
      for (int64_t s = 0; s < steps; ++s)
        for (int64_t m = 0; m < accum; ++m) {
          Batch b = loader.next();
          EXPECT_EQ(b.step, s);
          for (int64_t i = 0; i < b.y.numel(); ++i) per_step[s].push_back(b.y.data<int32_t>()[i]);
        }
    }
    for (auto& v : per_step) std::sort(v.begin(), v.end());
    return per_step;
  };
  auto one = collect(1, 1);
  for (auto& v : one) EXPECT_EQ(v.size(), static_cast<size_t>(B));
  EXPECT_EQ(collect(2, 1), one);
  EXPECT_EQ(collect(3, 1), one);
  EXPECT_EQ(collect(3, 2), one);
  EXPECT_EQ(collect(5, 3), one);
}

TEST(Loader, FirstSampleIsTheStreamPosition) {
  Split split;
  split.x = Tensor::zeros({10, 1});
  split.y = Tensor::zeros({10}, DType::i32);
  Loader loader(split, {8, 2, 1, 2, 1, 3, 0, 24, nullptr});
  Batch b = loader.next();  // step 3, micro 0 = positions [24, 28); rank 1 of 2 = [26, 28)
  EXPECT_EQ(b.first_sample, 26);
  EXPECT_EQ(b.x.dim(0), 2);
}

// A batch over 4 MiB is copied by several threads; it must hold the same rows as one thread's.
TEST(Loader, LargeBatchesCopiedByThreadsAreTheSame) {
  Split split;
  const int64_t rows = 301, features = 4099;  // 4.9 MB per batch of 301 rows
  split.x = testing::random_tensor({rows, features}, 17);
  split.y = Tensor::empty({rows}, DType::i32);
  for (int64_t i = 0; i < rows; ++i) split.y.data<int32_t>()[i] = static_cast<int32_t>(i);
  auto batches = [&](int64_t threads) {
    Loader::Options opt{rows, 1, 0, 1, 2, 0, 5, 0, nullptr};
    opt.threads = threads;
    Loader loader(split, opt);
    std::vector<Batch> out;
    for (int s = 0; s < 3; ++s) out.push_back(loader.next());
    return out;
  };
  auto one = batches(1), three = batches(3);
  for (size_t s = 0; s < one.size(); ++s) {
    ASSERT_EQ(one[s].x.nbytes(), three[s].x.nbytes());
    EXPECT_EQ(0, std::memcmp(one[s].x.raw(), three[s].x.raw(), one[s].x.nbytes()));
    EXPECT_EQ(0, std::memcmp(one[s].y.raw(), three[s].y.raw(), one[s].y.nbytes()));
    // and the rows are the samples the labels name
    const int32_t first = one[s].y.data<int32_t>()[0];
    EXPECT_EQ(0, std::memcmp(one[s].x.raw(), split.x.data<float>() + first * features,
                             features * sizeof(float)));
  }
}

TEST(Utf8, CharactersOfOneToFourBytes) {
  const auto chars = utf8_characters("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z");
  ASSERT_EQ(chars.size(), 5u);
  EXPECT_EQ(chars[1], "\xc3\xa9");
  EXPECT_EQ(chars[2].size(), 3u);
  EXPECT_EQ(chars[3].size(), 4u);
  EXPECT_EQ(chars[4], "z");
  EXPECT_THROW(utf8_characters("ab\xff"), InputError);
  EXPECT_THROW(utf8_characters("ab\xc3"), InputError);          // truncated
  EXPECT_THROW(utf8_characters("ab\xe2\x28\xa1"), InputError);  // bad continuation
}

// Token windows: sample s is tokens [s, s + T) with the next tokens as targets, in the global
// order of the sampler, split over ranks like rows.
TEST(Loader, TokenWindowsAndTheirTargets) {
  const int64_t n = 100, T = 5, B = 7;
  Tensor tokens = Tensor::empty({n}, DType::i32);
  for (int64_t i = 0; i < n; ++i) tokens.data<int32_t>()[i] = static_cast<int32_t>(i);
  Split split = token_windows("train", tokens, T);
  EXPECT_EQ(split.rows(), n - T);
  auto collect = [&](int64_t world) {
    std::vector<std::vector<int32_t>> firsts(4);
    for (int64_t r = 0; r < world; ++r) {
      Loader loader(split, {B, 1, r, world, 2, 0, 3, 0, nullptr});
      for (int s = 0; s < 4; ++s) {
        Batch b = loader.next();
        EXPECT_EQ(b.x.dtype(), DType::i32);
        EXPECT_EQ(b.x.shape(), (Shape{b.x.dim(0), T}));
        for (int64_t i = 0; i < b.x.dim(0); ++i) {
          const int32_t* x = b.x.data<int32_t>() + i * T;
          const int32_t* y = b.y.data<int32_t>() + i * T;
          for (int64_t t = 0; t < T; ++t) {
            EXPECT_EQ(x[t], x[0] + t);
            EXPECT_EQ(y[t], x[t] + 1);
          }
          EXPECT_LE(x[0], n - T - 1);
          firsts[s].push_back(x[0]);
        }
      }
    }
    for (auto& v : firsts) std::sort(v.begin(), v.end());
    return firsts;
  };
  EXPECT_EQ(collect(2), collect(1));
  EXPECT_EQ(collect(3), collect(1));
}

TEST(TokenCorpus, RejectsIdsOutsideTheVocabulary) {
  const std::string path = testing::temp_path("tokens.h5");
  {
    h5::File f = h5::File::create(path);
    Tensor t = Tensor::empty({4}, DType::i32);
    const int32_t ids[] = {0, 1, 2, 3};
    std::copy(std::begin(ids), std::end(ids), t.data<int32_t>());
    f.write("/train/tokens", t);
    f.write_attr("/", "vocab", std::string(R"(["a", "b", "c"])"));
  }
  EXPECT_TRUE(TokenCorpus::is_token_file(path));
  try {
    TokenCorpus::load(path);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("/train/tokens[3] = 3, outside the vocabulary of 3"),
              std::string::npos)
        << e.what();
  }
}

TEST(Normalize, StandardisesTrainingFeatures) {
  Split split;
  split.x = testing::random_tensor({100, 3}, 5, 2, 9);
  FeatureStats st = feature_stats(split.x);
  normalize_inputs(split, st);
  FeatureStats after = feature_stats(split.x);
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(after.mean[c], 0.0, 1e-5);
    EXPECT_NEAR(after.stddev[c], 1.0, 1e-4);
  }
}

}  // namespace
}  // namespace tern
