#pragma once
// Live accuracy of one model: predictions kept by request id, joined with the ground truth that
// arrives later (POST /v2/models/{m}/feedback), scored per version over the last labelled rows.
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "tern/base/clock.h"

namespace tern::serve {

struct FeedbackOptions {
  int64_t capacity = 100000;  // predictions kept, at most (the oldest go first)
  double ttl_seconds = 3600;  // feedback for an older prediction is late: counted, not joined
  int64_t window = 1000;      // labelled rows the live figures cover, per version
};

class FeedbackJoin {
 public:
  FeedbackJoin(FeedbackOptions options, bool classification);

  // A request's answer: per row its predicted class (classification) or its outputs.
  void record(const std::string& id, int64_t version, int64_t rows, std::vector<float> predicted,
              Clock::time_point now = Clock::now());

  struct Result {
    int64_t matched = 0, unmatched = 0, late = 0;
  };
  // One feedback item, checked: the id and its ground truth as numbers (class indices, or
  // targets, row after row).
  struct Item {
    std::string id;
    std::vector<double> truth;
  };
  // {"id": ..., "label": L | "labels": [..]} for classification (a class index in [0, classes),
  // or a class name of `labels`), {"id": ..., "target": v | [..] | [[..]]} for regression.
  // HttpError (400) naming the item when it is malformed.
  Item parse(const nlohmann::json& item, const std::vector<std::string>& labels,
             int64_t classes) const;
  // Joins the items with their predictions, all or none: an item whose number of values does not
  // fit its request is an HttpError (400) naming it, and then nothing is joined.
  Result join(const std::vector<Item>& items, Clock::time_point now = Clock::now());
  size_t queued() const;  // entries of the age queue (bounded by about twice those kept)

  struct Live {
    int64_t version = 0;
    int64_t rows = 0;          // labelled rows in the window
    double accuracy = 0;       // classification
    double mae = 0, rmse = 0;  // regression
    uint64_t matched = 0;      // feedback items joined, ever
  };
  std::vector<Live> live() const;
  uint64_t unmatched() const;
  uint64_t late() const;
  bool classification() const { return classification_; }

 private:
  struct Prediction {
    int64_t version;
    int64_t rows;
    std::vector<float> predicted;
    Clock::time_point at;
    uint64_t serial;  // tells a re-recorded id from the entry the order queue holds
  };
  struct Window {
    // Per labelled row: (wrong 0/1, same) for classification, (mean |error|, mean squared
    // error) over the outputs for regression.
    std::deque<std::pair<double, double>> errors;
    uint64_t matched = 0;
  };
  void score(int64_t version, double error, double squared);  // mu_ held

  const FeedbackOptions options_;
  const bool classification_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Prediction> by_id_;
  std::deque<std::pair<std::string, uint64_t>> order_;  // ids by age, with their serial
  uint64_t serial_ = 0;
  std::map<int64_t, Window> windows_;
  uint64_t unmatched_ = 0, late_ = 0;
};

}  // namespace tern::serve
