// The option machinery every tool shares: INI sections and command-line overrides.
#include "tern/base/options.h"

#include <charconv>
#include <fstream>
#include <sstream>

#include "tern/base/error.h"
#include "tern/base/version.h"

namespace po = boost::program_options;

namespace tern {

template <class T>
std::string OptionSet::format(const T& v) {
  std::ostringstream out;
  if constexpr (std::is_same_v<T, bool>) {
    out << (v ? "true" : "false");
  } else if constexpr (std::is_floating_point_v<T>) {
    // The shortest text that reads back as the same value: 0.001, not 0.00100000005.
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof buf, v);
    out << std::string(buf, res.ptr);
  } else {
    out << v;
  }
  return out.str();
}

template std::string OptionSet::format(const bool&);
template std::string OptionSet::format(const float&);
template std::string OptionSet::format(const double&);
template std::string OptionSet::format(const int64_t&);
template std::string OptionSet::format(const std::string&);

namespace {

void reject_unknown(const po::parsed_options& parsed, const std::string& where) {
  for (const auto& opt : parsed.options) {
    if (!opt.unregistered) continue;
    std::string value;
    for (const auto& v : opt.value) value += (value.empty() ? "" : " ") + v;
    std::string key = opt.string_key.empty() && !opt.original_tokens.empty()
                          ? opt.original_tokens.front()
                          : opt.string_key;
    throw InputError(where + ": unknown key '" + key + "'" +
                     (value.empty() ? "" : " (value '" + value + "')") +
                     "; --help lists every key");
  }
}

}  // namespace

OptionSet::OptionSet(std::string program) : program_(std::move(program)) {}

po::options_description& OptionSet::section(const std::string& key) {
  const std::string name = key.substr(0, key.find('.'));
  auto& slot = sections_[name];
  if (!slot) {
    slot = std::make_unique<po::options_description>("[" + name + "]", 100, 50);
    section_order_.push_back(name);
  }
  return *slot;
}

void OptionSet::add_value(const std::string& key, const po::value_semantic* sem,
                          const std::string& help, std::function<std::string()> show) {
  section(key).add_options()(key.c_str(), sem, help.c_str());
  keys_.emplace_back(key, std::move(show));
}

void OptionSet::add_list(const std::string& key, std::vector<std::string>* target,
                         const std::string& help) {
  section(key).add_options()(key.c_str(), po::value<std::vector<std::string>>(target),
                             help.c_str());
  keys_.emplace_back(key, [key, target] {
    std::string out;
    for (size_t i = 0; i < target->size(); ++i)
      out += (i ? "\n" + key.substr(key.find('.') + 1) + " = " : "") + (*target)[i];
    return out;
  });
}

std::string OptionSet::help_text() const {
  std::ostringstream out;
  out << "Usage: " << program_ << " [--config FILE.ini] [--section.key=value ...]\n\n"
      << "Every key can be set in the INI file (under [section]) or on the command line; the\n"
      << "command line wins.\n\n"
      << "  --config FILE    INI file with the settings\n"
      << "  --help           this text\n"
      << "  --version        version and git commit\n";
  for (const auto& name : section_order_) out << "\n" << *sections_.at(name);
  if (!epilog_.empty()) out << "\n" << epilog_;
  return out.str();
}

OptionSet::Outcome OptionSet::parse(int argc, const char* const* argv) {
  po::options_description all;
  for (const auto& name : section_order_) all.add(*sections_.at(name));
  po::options_description meta;
  meta.add_options()("config", po::value<std::string>(&config_file_))("help", "")("version", "");
  po::options_description cmdline;
  cmdline.add(meta).add(all);

  po::variables_map vm;
  try {
    po::parsed_options parsed =
        po::command_line_parser(argc, argv).options(cmdline).allow_unregistered().run();
    reject_unknown(parsed, "command line");
    for (const auto& opt : parsed.options) origins_[opt.string_key] = "command line";
    po::store(parsed, vm);
  } catch (const po::error& e) {
    throw InputError(std::string("command line: ") + e.what());
  }
  if (vm.count("help")) return Outcome::help;
  if (vm.count("version")) return Outcome::version;
  if (vm.count("config")) {
    config_file_ = vm["config"].as<std::string>();
    std::ifstream file(config_file_);
    if (!file) throw InputError("config file '" + config_file_ + "' cannot be read (missing?)");
    try {
      po::parsed_options parsed = po::parse_config_file(file, all, true);
      reject_unknown(parsed, "config file '" + config_file_ + "'");
      for (const auto& opt : parsed.options)
        if (!origins_.count(opt.string_key)) origins_[opt.string_key] = config_file_;
      po::store(parsed, vm);
    } catch (const po::error& e) {
      throw InputError("config file '" + config_file_ + "': " + e.what());
    }
  }
  try {
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(e.what());
  }
  return Outcome::run;
}

std::string OptionSet::origin(const std::string& key) const {
  auto it = origins_.find(key);
  return it == origins_.end() ? "default" : it->second;
}

std::string OptionSet::describe(const std::string& key) const {
  for (const auto& [k, show] : keys_)
    if (k == key) return key + "=" + show() + " (from " + origin(key) + ")";
  return key;
}

std::string OptionSet::effective_ini() const {
  std::ostringstream out;
  out << "# effective configuration of " << program_ << " " << version_string() << "\n";
  std::string current;
  for (const auto& [key, show] : keys_) {
    const std::string sec = key.substr(0, key.find('.'));
    if (sec != current) {
      out << "\n[" << sec << "]\n";
      current = sec;
    }
    const std::string value = show();
    if (!value.empty()) out << key.substr(sec.size() + 1) << " = " << value << "\n";
  }
  return out.str();
}

}  // namespace tern
