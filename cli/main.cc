// Entry point of the densert command: parses the command line and maps errors to exit codes.
#include <densert/densert.h>

#include <charconv>
#include <cstdio>
#include <exception>
#include <map>

#include "cli/commands.h"

namespace densert::cli {

CLI::Validator in_range(int64_t minimum, int64_t maximum) {
  const std::string description =
      maximum == INT64_MAX ? "INT >= " + std::to_string(minimum)
                           : "INT " + std::to_string(minimum) + ".." + std::to_string(maximum);
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        int64_t value = 0;
        const char* end = text.data() + text.size();
        const auto [stop, error] = std::from_chars(text.data(), end, value);
        if (stop != end || (error != std::errc() && error != std::errc::result_out_of_range))
          return "expects a whole number, got \"" + text + "\"";
        if (error == std::errc::result_out_of_range || value > maximum)
          return "must be at most " + std::to_string(maximum) + ", got " + text;
        if (value < minimum) return "must be at least " + std::to_string(minimum) + ", got " + text;
        return "";
      },
      description);
}

CLI::Validator at_least(int64_t minimum) {
  return in_range(minimum, INT64_MAX);
}

CLI::Validator thread_count() {
  return in_range(0, DENSERT_MAX_THREADS);
}

CLI::Validator batch_size() {
  return in_range(1, kMaxBatch);
}

void print_error(const std::string& message) {
  std::string line = "densert: ";
  for (const unsigned char c : message) {
    if (c >= 0x20 && c != 0x7f) {
      line += static_cast<char>(c);
    } else if (c == '\n' || c == '\r' || c == '\t') {
      line += c == '\n' ? "\\n" : c == '\r' ? "\\r" : "\\t";
    } else {
      char escaped[8];
      std::snprintf(escaped, sizeof(escaped), "\\x%02x", c);
      line += escaped;
    }
  }
  line += '\n';
  std::fputs(line.c_str(), stderr);
}

int report(const Status& status) {
  print_error(status.to_string());
  switch (status.kind()) {
    case ErrorKind::kOk:
      return kExitOk;
    case ErrorKind::kInvalidModel:
    case ErrorKind::kUnsupported:
      return kExitModel;
    case ErrorKind::kBadArgument:
      return kExitInput;
    case ErrorKind::kInternal:
      return kExitInternal;
  }
  return kExitInternal;
}

}  // namespace densert::cli

int main(int argc, char** argv) {
  using namespace densert::cli;
  CLI::App app("densert: a fast inference runtime for DenseNets", "densert");
  app.set_version_flag("--version", std::string("densert ") + DENSERT_VERSION);
  app.require_subcommand(1);
  // One line, like every other densert error.
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return "densert: " + std::string(e.what()) + " (see densert --help)\n";
  });
  std::map<CLI::App*, Command> commands;
  const auto add = [&](Command (*factory)(CLI::App&)) {
    const size_t before = app.get_subcommands({}).size();
    Command command = factory(app);
    commands[app.get_subcommands({})[before]] = std::move(command);
  };
  add(add_classify_command);
  add(add_evaluate_command);
  add(add_inspect_command);
  add(add_run_command);
  add(add_bench_command);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }
  try {
    for (auto& [sub, command] : commands) {
      if (sub->parsed()) return command();
    }
  } catch (const std::exception& e) {
    return report(densert::Status::internal(e.what()));
  }
  return kExitUsage;
}
