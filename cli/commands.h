// The densert subcommands. Each registers its options on the parser and returns an exit code
// from the table in exit_codes.h when run.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

#include "runtime/status.h"

namespace densert::cli {

// Documented exit codes (README.md, "Exit codes").
enum ExitCode {
  kExitOk = 0,
  kExitSomeInputsFailed = 1,  // classify: some images could not be read; the rest were processed
  kExitUsage = 2,             // the command line is wrong
  kExitModel = 3,             // the model is invalid or uses something unsupported
  kExitInput = 4,             // an input file or argument is wrong
  kExitInternal = 5,          // a bug or a failure of a dependency
};

// Prints "densert: <kind>: <message>" on stderr and returns the exit code for the status.
int report(const Status& status);
// Prints "densert: <message>" on stderr as one line: control characters (a newline in a file
// name, say) are written as \n, \r, \t or \xNN.
void print_error(const std::string& message);

// Checks for integer options whose failures read "--batch: must be at least 1, got 0" (exit
// code 2); CLI11's own range check prints its bounds as 300-digit doubles.
CLI::Validator at_least(int64_t minimum);
CLI::Validator in_range(int64_t minimum, int64_t maximum);
// --threads: 0 (physical cores) to DENSERT_MAX_THREADS.
CLI::Validator thread_count();
// --batch: 1 to kMaxBatch.
inline constexpr int64_t kMaxBatch = 65536;
CLI::Validator batch_size();

using Command = std::function<int()>;
Command add_inspect_command(CLI::App& app);
Command add_run_command(CLI::App& app);
Command add_bench_command(CLI::App& app);
Command add_classify_command(CLI::App& app);
Command add_evaluate_command(CLI::App& app);

struct ClassifierOptions;
// The options classify and evaluate share: model, labels, preprocessing, threads.
void add_classifier_options(CLI::App* sub, ClassifierOptions& options);

}  // namespace densert::cli
