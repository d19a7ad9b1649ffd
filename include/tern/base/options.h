#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

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

}  // namespace tern
