// Entry point of the densert command: parses the command line and maps errors to exit codes.
#include <cstdio>
#include <exception>
#include <map>

#include "cli/commands.h"

namespace densert::cli {

int report(const Status& status) {
  std::fprintf(stderr, "densert: %s\n", status.to_string().c_str());
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
