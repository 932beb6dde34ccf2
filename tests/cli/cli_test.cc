// The densert command end to end: inspect and run on every fixture, classify on the sample
// images with exact labels, and bad image files reported without losing the others.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/npy.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_support.h"

namespace densert {
namespace {

using testing::fixture_dir;
using testing::source_dir;

struct CommandResult {
  int exit_code = -1;
  std::string stdout_text;
  std::string stderr_text;
};

CommandResult densert(const std::string& arguments) {
  const std::string err_file = ::testing::TempDir() + "densert_stderr.txt";
  const std::string command =
      testing::binary_dir() + "/cli/densert " + arguments + " 2> " + err_file;
  CommandResult result;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buffer;
  size_t got;
  while ((got = fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    result.stdout_text.append(buffer.data(), got);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream err(err_file);
  result.stderr_text.assign(std::istreambuf_iterator<char>(err), std::istreambuf_iterator<char>());
  return result;
}

struct FixtureModel {
  const char* name;
  int resolution;
  const char* opset_line;
};

void PrintTo(const FixtureModel& fixture, std::ostream* out) {
  *out << fixture.name;
}

class CliOnFixture : public ::testing::TestWithParam<FixtureModel> {};

TEST_P(CliOnFixture, InspectAndRun) {
  const FixtureModel& f = GetParam();
  const std::string model = fixture_dir() + "/" + f.name + ".onnx";
  const CommandResult inspect = densert("inspect " + model);
  ASSERT_EQ(inspect.exit_code, 0) << inspect.stderr_text;
  EXPECT_NE(inspect.stdout_text.find(f.opset_line), std::string::npos) << inspect.stdout_text;
  EXPECT_NE(inspect.stdout_text.find("input:  input                f32[N,3," +
                                     std::to_string(f.resolution)),
            std::string::npos)
      << inspect.stdout_text;

  // Three images through `densert run` against PyTorch's batch-3 output.
  Expected<Tensor> images =
      read_npy(fixture_dir() + "/input_" + std::to_string(f.resolution) + ".npy");
  ASSERT_TRUE(images.ok());
  testing::TempDir dir;
  const std::string input = dir.path() + "/x.npy", output = dir.path() + "/y.npy";
  ASSERT_TRUE(write_npy(input, testing::slice_batch(*images, 0, 3)).ok());
  const CommandResult run =
      densert("run --model " + model + " --input " + input + " --output " + output);
  ASSERT_EQ(run.exit_code, 0) << run.stderr_text;
  EXPECT_NE(run.stdout_text.find("output: f32[3,"), std::string::npos) << run.stdout_text;
  Expected<Tensor> got = read_npy(output);
  Expected<Tensor> golden = read_npy(fixture_dir() + "/" + f.name + ".golden_b3.npy");
  ASSERT_TRUE(got.ok() && golden.ok());
  testing::expect_close_with_same_top1(*got, *golden, 1e-4f, f.name);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CliOnFixture,
                         ::testing::Values(FixtureModel{"densenet_bc_cifar", 32, "opset: 13"},
                                           FixtureModel{"densenet_bc_cifar_op9", 32, "opset: 9"},
                                           FixtureModel{"densenet_chained", 40, "opset: 13"},
                                           FixtureModel{"densenet121_op11", 224, "opset: 11"},
                                           FixtureModel{"densenet121_op13", 224, "opset: 13"},
                                           FixtureModel{"densenet121_op17", 224, "opset: 17"},
                                           FixtureModel{"densenet169_op11", 224, "opset: 11"},
                                           FixtureModel{"densenet169_op13", 224, "opset: 13"},
                                           FixtureModel{"densenet169_op17", 224, "opset: 17"},
                                           FixtureModel{"densenet201_op11", 224, "opset: 11"},
                                           FixtureModel{"densenet201_op13", 224, "opset: 13"},
                                           FixtureModel{"densenet201_op17", 224, "opset: 17"},
                                           FixtureModel{"densenet161_op11", 224, "opset: 11"},
                                           FixtureModel{"densenet161_op13", 224, "opset: 13"},
                                           FixtureModel{"densenet161_op17", 224, "opset: 17"}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(CliOnFixture, ReferenceEngineGivesTheSameOutput) {
  const std::string model = fixture_dir() + "/densenet_chained.onnx";
  Expected<Tensor> images = read_npy(fixture_dir() + "/input_40.npy");
  ASSERT_TRUE(images.ok());
  testing::TempDir dir;
  ASSERT_TRUE(write_npy(dir.path() + "/x.npy", testing::slice_batch(*images, 0, 3)).ok());
  for (const char* engine : {"fast", "reference"}) {
    const CommandResult run =
        densert(std::string("run --engine ") + engine + " -m " + model + " -i input=" + dir.path() +
                "/x.npy -o " + dir.path() + "/" + engine + ".npy");
    ASSERT_EQ(run.exit_code, 0) << run.stderr_text;
  }
  Expected<Tensor> fast = read_npy(dir.path() + "/fast.npy");
  Expected<Tensor> reference = read_npy(dir.path() + "/reference.npy");
  ASSERT_TRUE(fast.ok() && reference.ok());
  testing::expect_close_with_same_top1(*fast, *reference, 1e-4f, "fast vs reference");
}

// The sample images, named after their class, with the built-in model.
const char* kSamples[] = {"ankle_boot", "bag",   "coat",    "dress",       "pullover",
                          "sandal",     "shirt", "sneaker", "t-shirt_top", "trouser"};

std::string label_of(const std::string& sample) {
  if (sample == "t-shirt_top") return "t-shirt/top";
  std::string label = sample;
  std::replace(label.begin(), label.end(), '_', ' ');
  return label;
}

TEST(Classify, SampleImagesPlain) {
  const CommandResult result = densert("classify " + source_dir() + "/examples/images --top 1");
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  std::istringstream lines(result.stdout_text);
  std::string line;
  int seen = 0;
  while (std::getline(lines, line)) {
    const std::string sample = kSamples[seen];
    EXPECT_NE(line.find("/" + sample + ".png"), std::string::npos) << line;
    EXPECT_NE(line.find("  " + label_of(sample) + " "), std::string::npos) << line;
    ++seen;
  }
  EXPECT_EQ(seen, 10);
}

TEST(Classify, SampleImagesJson) {
  const CommandResult result =
      densert("classify " + source_dir() + "/examples/images --json --top 3 --batch 4");
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  std::istringstream lines(result.stdout_text);
  std::string line;
  int seen = 0;
  while (std::getline(lines, line)) {
    const nlohmann::json record = nlohmann::json::parse(line);
    const std::string sample = kSamples[seen++];
    EXPECT_NE(record["path"].get<std::string>().find(sample + ".png"), std::string::npos);
    ASSERT_EQ(record["top"].size(), 3u);
    EXPECT_EQ(record["top"][0]["label"], label_of(sample));
    EXPECT_GE(record["top"][0]["probability"].get<double>(),
              record["top"][1]["probability"].get<double>());
    EXPECT_LE(record["top"][0]["probability"].get<double>(), 1.0);
  }
  EXPECT_EQ(seen, 10);
}

TEST(Classify, BadFilesAreReportedAndTheRestClassified) {
  testing::TempDir dir;
  testing::write_file(dir.path() + "/empty.png", "");
  testing::write_file(dir.path() + "/notes.jpg", "these are not pixels");
  std::ifstream good(source_dir() + "/examples/images/bag.png", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(good)), std::istreambuf_iterator<char>());
  testing::write_file(dir.path() + "/cut.png", bytes.substr(0, bytes.size() / 2));
  const CommandResult result =
      densert("classify " + dir.path() + "/empty.png " + dir.path() + "/notes.jpg " + dir.path() +
              "/cut.png " + source_dir() + "/examples/images/bag.png " + dir.path() +
              "/missing.png --top 1");
  EXPECT_EQ(result.exit_code, 1);
  // One line: the good image, padded to the longest name given, then its label.
  EXPECT_EQ(std::count(result.stdout_text.begin(), result.stdout_text.end(), '\n'), 1)
      << result.stdout_text;
  EXPECT_EQ(result.stdout_text.rfind(source_dir() + "/examples/images/bag.png ", 0), 0u)
      << result.stdout_text;
  EXPECT_NE(result.stdout_text.find("  bag 1.000"), std::string::npos) << result.stdout_text;
  EXPECT_NE(result.stderr_text.find(dir.path() + "/empty.png: file is empty (0 bytes)"),
            std::string::npos);
  EXPECT_NE(result.stderr_text.find(dir.path() + "/notes.jpg: not a readable image"),
            std::string::npos);
  EXPECT_NE(result.stderr_text.find(dir.path() + "/cut.png: truncated PNG"), std::string::npos);
  EXPECT_NE(result.stderr_text.find(dir.path() + "/missing.png: cannot be opened"),
            std::string::npos);
  EXPECT_NE(result.stderr_text.find("4 of 5 images could not be classified"), std::string::npos)
      << result.stderr_text;
}

TEST(Cli, UsageErrorsAndVersion) {
  EXPECT_EQ(densert("").exit_code, 2);
  EXPECT_EQ(densert("frobnicate").exit_code, 2);
  EXPECT_EQ(densert("classify").exit_code, 2);
  const CommandResult version = densert("--version");
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_NE(version.stdout_text.find("densert 0.1.0"), std::string::npos);
  const CommandResult missing = densert("inspect /nonexistent.onnx");
  EXPECT_EQ(missing.exit_code, 4);
  EXPECT_EQ(missing.stderr_text,
            "densert: bad argument: /nonexistent.onnx: cannot open model file\n");
}

}  // namespace
}  // namespace densert
