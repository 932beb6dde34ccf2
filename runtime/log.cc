// DENSERT_VERBOSE parsing and the default stderr sink.
#include "runtime/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace densert {
namespace {

constexpr unsigned kAll =
    static_cast<unsigned>(LogCategory::kError) | static_cast<unsigned>(LogCategory::kInfo) |
    static_cast<unsigned>(LogCategory::kDispatch) | static_cast<unsigned>(LogCategory::kProfile);

std::atomic<unsigned>& categories_storage() {
  static std::atomic<unsigned> categories = [] {
    const char* env = std::getenv("DENSERT_VERBOSE");
    return parse_log_categories(env ? env : "");
  }();
  return categories;
}

std::mutex& sink_mutex() {
  static std::mutex mutex;
  return mutex;
}

LogSink& sink_storage() {
  static LogSink sink;
  return sink;
}

}  // namespace

const char* log_category_name(LogCategory category) {
  switch (category) {
    case LogCategory::kError:
      return "error";
    case LogCategory::kInfo:
      return "info";
    case LogCategory::kDispatch:
      return "dispatch";
    case LogCategory::kProfile:
      return "profile";
  }
  return "unknown";
}

unsigned parse_log_categories(const std::string& spec) {
  unsigned result = static_cast<unsigned>(LogCategory::kError);
  if (spec == "none") return 0;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t end = spec.find(',', start);
    if (end == std::string::npos) end = spec.size();
    const std::string word = spec.substr(start, end - start);
    if (word == "all" || word == "2") result |= kAll;
    if (word == "info" || word == "1") result |= static_cast<unsigned>(LogCategory::kInfo);
    if (word == "dispatch") result |= static_cast<unsigned>(LogCategory::kDispatch);
    if (word == "profile") result |= static_cast<unsigned>(LogCategory::kProfile);
    start = end + 1;
  }
  return result;
}

unsigned log_categories() {
  return categories_storage().load(std::memory_order_relaxed);
}

void set_log_categories(unsigned categories) {
  categories_storage().store(categories, std::memory_order_relaxed);
}

void set_log_sink(LogSink sink) {
  std::lock_guard<std::mutex> lock(sink_mutex());
  sink_storage() = std::move(sink);
}

void log_line(LogCategory category, const std::string& text) {
  std::lock_guard<std::mutex> lock(sink_mutex());
  const std::string line = std::string("densert,") + log_category_name(category) + "," + text;
  if (sink_storage()) {
    sink_storage()(category, line);
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

}  // namespace densert
