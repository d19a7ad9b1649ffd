#include "tern/serve/feedback.h"

#include <algorithm>
#include <cmath>

#include "tern/serve/protocol.h"

namespace tern::serve {
namespace {

[[noreturn]] void bad(const std::string& id, const std::string& what) {
  throw HttpError(400, "feedback for id '" + id + "': " + what);
}

// The ground truth of one labelled item as numbers: class indices, or targets.
std::vector<double> truth_values(const nlohmann::json& item, const std::string& id,
                                 bool classification, const std::vector<std::string>& labels,
                                 int64_t classes) {
  const char* key = classification ? (item.contains("labels") ? "labels" : "label") : "target";
  auto it = item.find(key);
  if (it == item.end())
    bad(id, classification ? "needs 'label' (a class index or name) or 'labels' (one per row)"
                           : "needs 'target' (a number, or one list per row)");
  std::vector<double> out;
  auto add = [&](const nlohmann::json& v) {
    if (v.is_number()) {
      out.push_back(v.get<double>());
    } else if (classification && v.is_string()) {
      auto l = std::find(labels.begin(), labels.end(), v.get<std::string>());
      if (l == labels.end()) bad(id, "label '" + v.get<std::string>() + "' is no class name");
      out.push_back(static_cast<double>(l - labels.begin()));
    } else if (!classification && v.is_array()) {
      for (const auto& e : v) {
        if (!e.is_number()) bad(id, "targets must be numbers");
        out.push_back(e.get<double>());
      }
    } else {
      bad(id, std::string("'") + key + "' holds a value that is neither a number" +
                  (classification ? " nor a class name" : " nor a list of numbers"));
    }
  };
  if (it->is_array() && (classification || std::string(key) == "target"))
    for (const auto& v : *it) add(v);
  else
    add(*it);
  for (double v : out) {
    if (!std::isfinite(v)) bad(id, "values must be finite");
    if (classification && (v < 0 || v >= static_cast<double>(classes) || v != std::floor(v)))
      bad(id, "label " + std::to_string(v) + " is no class index in [0, " +
                  std::to_string(classes) + ")");
  }
  return out;
}

}  // namespace

FeedbackJoin::FeedbackJoin(FeedbackOptions options, bool classification)
    : options_(options), classification_(classification) {}

void FeedbackJoin::record(const std::string& id, int64_t version, int64_t rows,
                          std::vector<float> predicted, Clock::time_point now) {
  std::lock_guard lock(mu_);
  const uint64_t serial = ++serial_;
  by_id_[id] = Prediction{version, rows, std::move(predicted), now, serial};
  order_.emplace_back(id, serial);
  auto current = [&](const std::pair<std::string, uint64_t>& entry) {
    auto it = by_id_.find(entry.first);
    return it != by_id_.end() && it->second.serial == entry.second;
  };
  while (static_cast<int64_t>(by_id_.size()) > options_.capacity && !order_.empty()) {
    if (current(order_.front())) by_id_.erase(order_.front().first);
    order_.pop_front();
  }
  // Entries of ids recorded again, joined or late stay in the queue until they reach its front;
  // when they outnumber the kept ones, the queue is rebuilt without them.
  if (order_.size() > 2 * by_id_.size() + 1024) {
    std::deque<std::pair<std::string, uint64_t>> kept;
    for (auto& entry : order_)
      if (current(entry)) kept.push_back(std::move(entry));
    order_.swap(kept);
  }
}

FeedbackJoin::Item FeedbackJoin::parse(const nlohmann::json& item,
                                       const std::vector<std::string>& labels,
                                       int64_t classes) const {
  if (!item.is_object()) throw HttpError(400, "every feedback item must be a JSON object");
  auto id_it = item.find("id");
  if (id_it == item.end() || !id_it->is_string())
    throw HttpError(400, "every feedback item needs 'id', the string id of its infer request");
  Item out;
  out.id = id_it->get<std::string>();
  out.truth = truth_values(item, out.id, classification_, labels, classes);
  return out;
}

FeedbackJoin::Result FeedbackJoin::join(const std::vector<Item>& items, Clock::time_point now) {
  std::lock_guard lock(mu_);
  for (const Item& item : items) {
    auto it = by_id_.find(item.id);
    if (it == by_id_.end()) continue;
    const Prediction& p = it->second;
    const size_t want = classification_ ? static_cast<size_t>(p.rows) : p.predicted.size();
    if (item.truth.size() != want)
      bad(item.id,
          "has " + std::to_string(item.truth.size()) + " value(s); its request had " +
              std::to_string(p.rows) + " row(s)" +
              (classification_
                   ? ""
                   : " of " + std::to_string(p.predicted.size() / std::max<int64_t>(p.rows, 1)) +
                         " output(s)") +
              "; nothing of this feedback was joined");
  }
  Result result;
  for (const Item& item : items) {
    auto it = by_id_.find(item.id);
    if (it == by_id_.end()) {
      ++unmatched_;
      ++result.unmatched;
      continue;
    }
    const Prediction& p = it->second;
    if (std::chrono::duration<double>(now - p.at).count() > options_.ttl_seconds) {
      ++late_;
      ++result.late;
      by_id_.erase(it);
      continue;
    }
    const size_t width = p.predicted.size() / static_cast<size_t>(std::max<int64_t>(p.rows, 1));
    for (int64_t r = 0; r < p.rows; ++r) {
      if (classification_) {
        const double wrong = item.truth[r] == p.predicted[r] ? 0.0 : 1.0;
        score(p.version, wrong, wrong);
        continue;
      }
      double abs_sum = 0, sq_sum = 0;
      for (size_t k = 0; k < width; ++k) {
        const double e = item.truth[r * width + k] - p.predicted[r * width + k];
        abs_sum += std::fabs(e);
        sq_sum += e * e;
      }
      score(p.version, abs_sum / static_cast<double>(width), sq_sum / static_cast<double>(width));
    }
    ++windows_[p.version].matched;
    by_id_.erase(it);
    ++result.matched;
  }
  return result;
}

size_t FeedbackJoin::queued() const {
  std::lock_guard lock(mu_);
  return order_.size();
}

void FeedbackJoin::score(int64_t version, double error, double squared) {
  Window& w = windows_[version];
  w.errors.emplace_back(error, squared);
  while (static_cast<int64_t>(w.errors.size()) > options_.window) w.errors.pop_front();
}

std::vector<FeedbackJoin::Live> FeedbackJoin::live() const {
  std::lock_guard lock(mu_);
  std::vector<Live> out;
  for (const auto& [version, w] : windows_) {
    Live l;
    l.version = version;
    l.rows = static_cast<int64_t>(w.errors.size());
    l.matched = w.matched;
    // Summed when asked (a scrape), not kept running: no rounding drift from adds and drops.
    double sum = 0, sum_sq = 0;
    for (const auto& [e, sq] : w.errors) {
      sum += e;
      sum_sq += sq;
    }
    const double n = std::max<double>(static_cast<double>(l.rows), 1.0);
    if (classification_) {
      l.accuracy = l.rows ? 1.0 - sum / n : 0.0;
    } else {
      l.mae = sum / n;
      l.rmse = std::sqrt(sum_sq / n);
    }
    out.push_back(l);
  }
  return out;
}

uint64_t FeedbackJoin::unmatched() const {
  std::lock_guard lock(mu_);
  return unmatched_;
}

uint64_t FeedbackJoin::late() const {
  std::lock_guard lock(mu_);
  return late_;
}

}  // namespace tern::serve
