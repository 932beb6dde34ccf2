// The verbose log: one environment variable, DENSERT_VERBOSE, selects categories
// (error, info, dispatch, profile, all); every record is one line "densert,<category>,<text>".
// Library code logs only through here so that an embedding program can route or silence it.
#pragma once

#include <functional>
#include <sstream>
#include <string>

namespace densert {

enum class LogCategory : unsigned {
  kError = 1u << 0,     // errors, always on unless silenced
  kInfo = 1u << 1,      // what was loaded and built, pass summaries
  kDispatch = 1u << 2,  // chosen kernels, each rewrite, each refused fusion or elision
  kProfile = 1u << 3,   // per-node timings
};

const char* log_category_name(LogCategory category);

// Parses a DENSERT_VERBOSE value such as "dispatch,profile", "all", "1" (info) or "0".
// Unknown words are ignored; error stays on unless the value is "none".
unsigned parse_log_categories(const std::string& spec);

// Categories in force: read from DENSERT_VERBOSE on first use, changeable later.
unsigned log_categories();
void set_log_categories(unsigned categories);
inline bool log_enabled(LogCategory category) {
  return (log_categories() & static_cast<unsigned>(category)) != 0;
}

// Where records go; the default writes each line to stderr. Pass nullptr to restore it.
using LogSink = std::function<void(LogCategory, const std::string& line)>;
void set_log_sink(LogSink sink);

void log_line(LogCategory category, const std::string& text);

}  // namespace densert

// Builds the message only when the category is on: DENSERT_LOG(kDispatch) << "conv_1: ...";
#define DENSERT_LOG(category)                                      \
  if (!::densert::log_enabled(::densert::LogCategory::category)) { \
  } else                                                           \
    ::densert::detail::LogRecord(::densert::LogCategory::category).stream()

namespace densert::detail {
class LogRecord {
 public:
  explicit LogRecord(LogCategory category) : category_(category) {}
  ~LogRecord() { log_line(category_, stream_.str()); }
  std::ostringstream& stream() { return stream_; }

 private:
  LogCategory category_;
  std::ostringstream stream_;
};
}  // namespace densert::detail
