// The densert command end to end: inspect and run on every fixture, classify on the sample
// images with exact labels, and bad image files reported without losing the others.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <sstream>
#include <vector>

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
  // ctest runs test processes in parallel: each gets its own file.
  const std::string err_file =
      ::testing::TempDir() + "densert_stderr." + std::to_string(getpid()) + ".txt";
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
  std::remove(err_file.c_str());
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

// Command-line values out of range are usage errors (exit code 2) with a readable bound.
TEST(Cli, OutOfRangeOptionsAreUsageErrors) {
  const std::string bag = source_dir() + "/examples/images/bag.png";
  const std::string cifar = fixture_dir() + "/densenet_bc_cifar.onnx";
  const std::pair<std::string, std::string> cases[] = {
      {"classify --batch 0 " + bag, "--batch: must be at least 1, got 0"},
      {"classify --top 0 " + bag, "--top: must be at least 1, got 0"},
      {"classify --threads -1 " + bag, "--threads: must be at least 0, got -1"},
      {"classify --threads 10000 " + bag, "--threads: must be at most 1024, got 10000"},
      {"classify --threads many " + bag, "--threads: expects a whole number, got \"many\""},
      {"run --threads 2000 -m " + cifar + " -i x.npy", "--threads: must be at most 1024, got 2000"},
      {"bench --threads 1025 -m " + cifar, "--threads: must be at most 1024, got 1025"},
      {"evaluate --limit -1", "--limit: must be at least 0, got -1"},
      {"bench --batch 65537 -m " + cifar, "--batch: must be at most 65536, got 65537"},
      {"bench --seconds inf -m " + cifar,
       "--seconds: expects seconds above 0 and at most 86400, got \"inf\""},
      {"bench --seconds -5 -m " + cifar,
       "--seconds: expects seconds above 0 and at most 86400, got \"-5\""},
      {"evaluate --idx-images images.idx", "--idx-images requires --idx-labels"},
      {"evaluate --idx-labels labels.idx", "--idx-labels requires --idx-images"},
      {"evaluate --idx-images images.idx --idx-labels labels.idx --dir photos",
       "--idx-images excludes --dir"},
  };
  for (const auto& [arguments, message] : cases) {
    const CommandResult result = densert(arguments);
    EXPECT_EQ(result.exit_code, 2) << arguments;
    EXPECT_EQ(result.stderr_text, "densert: " + message + " (see densert --help)\n")
        << arguments << "\n"
        << result.stderr_text;
  }
}

TEST(Cli, BadInputFilesAndPreprocessingAreExitCode4) {
  testing::TempDir dir;
  const std::string bag = source_dir() + "/examples/images/bag.png";
  ASSERT_TRUE(testing::write_file(dir.file("three.txt"), "a\nb\nc\n"));
  std::string twenty;
  for (int i = 0; i < 20; ++i)
    twenty += "label " + std::to_string(i) + "\n";
  ASSERT_TRUE(testing::write_file(dir.file("twenty.txt"), twenty));
  ASSERT_TRUE(testing::write_file(dir.file("empty.txt"), ""));
  // An IDX header claiming 2^32 - 1 images of 65535 x 65535 pixels over 100 bytes.
  ASSERT_TRUE(
      testing::write_file(dir.file("huge.idx"),
                          std::string("\0\0\x08\x03\xff\xff\xff\xff\0\0\xff\xff\0\0\xff\xff", 16) +
                              std::string(100, '\0')));
  ASSERT_TRUE(testing::write_file(dir.file("labels.idx"), std::string("\0\0\x08\x01\0\0\0\0", 8)));

  const std::string gray = R"('{"color":"gray",)";
  const std::pair<std::string, std::string> cases[] = {
      {"run -m " + fixture_dir() + "/densenet_bc_cifar.onnx -i " + dir.path(),
       dir.path() + ": is a folder, not a .npy file"},
      {"evaluate --idx-images " + dir.file("huge.idx") + " --idx-labels " + dir.file("labels.idx"),
       dir.file("huge.idx") +
           ": IDX header claims 4294967295 x 65535 x 65535 values, the file holds 100"},
      {"classify " + bag + " --preprocess " + gray +
           R"("resize":"shorter_side_center_crop","size":[28,28],"resize_to":0}')",
       "preprocessing resize_to 0 is smaller than the crop size [28,28]"},
      {"classify " + bag + " --preprocess " + gray + R"("size":[100000,100000]}')",
       "preprocessing size [100000,100000] does not match the model input [28,28]"},
      {"classify " + bag + " --preprocess " + gray + R"("szie":[28,28]}')",
       "preprocessing has an unknown key \"szie\""},
      {"classify --labels " + dir.file("three.txt") + " " + bag,
       "labels file " + dir.file("three.txt") + " has 3 names, the model has 10 classes"},
      {"classify --labels " + dir.file("twenty.txt") + " " + bag,
       "labels file " + dir.file("twenty.txt") + " has 20 names, the model has 10 classes"},
      {"classify --labels " + dir.file("empty.txt") + " " + bag,
       "labels file " + dir.file("empty.txt") + " has 0 names, the model has 10 classes"},
      {"classify --labels " + dir.path() + " " + bag,
       "labels file " + dir.path() + ": is a folder, not a file"},
  };
  for (const auto& [arguments, message] : cases) {
    const CommandResult result = densert(arguments);
    EXPECT_EQ(result.exit_code, 4) << arguments << "\n" << result.stderr_text;
    EXPECT_EQ(result.stderr_text.rfind("densert: bad argument: " + message, 0), 0u)
        << arguments << "\n"
        << result.stderr_text;
    EXPECT_EQ(std::count(result.stderr_text.begin(), result.stderr_text.end(), '\n'), 1)
        << result.stderr_text;
  }
}

TEST(Classify, NothingClassifiedIsExitCode4) {
  const CommandResult result = densert("classify /nonexistent/a.png /nonexistent/b.png");
  EXPECT_EQ(result.exit_code, 4);
  EXPECT_EQ(result.stderr_text,
            "densert: /nonexistent/a.png: cannot be opened\n"
            "densert: /nonexistent/b.png: cannot be opened\n"
            "densert: 2 of 2 images could not be classified\n");
}

// The built-in model, written to path with one metadata entry replaced.
void write_builtin_model_with_metadata(const std::string& path, const std::string& key,
                                       const std::string& value) {
  std::ifstream file(source_dir() + "/models/fashion_densenet.onnx", std::ios::binary);
  onnx::ModelProto model;
  ASSERT_TRUE(model.ParseFromIstream(&file));
  for (auto& prop : *model.mutable_metadata_props()) {
    if (prop.key() == key) prop.set_value(value);
  }
  std::ofstream out(path, std::ios::binary);
  ASSERT_TRUE(model.SerializeToOstream(&out));
}

TEST(Classify, MetadataLabelsOfTheWrongCountAreAnInvalidModel) {
  testing::TempDir dir;
  write_builtin_model_with_metadata(dir.file("m.onnx"), "densert.labels", R"(["a","b"])");
  const CommandResult result = densert("classify -m " + dir.file("m.onnx") + " " + source_dir() +
                                       "/examples/images/bag.png");
  EXPECT_EQ(result.exit_code, 3);
  EXPECT_EQ(result.stderr_text,
            "densert: invalid model: model metadata densert.labels has 2 names, the model has 10 "
            "classes\n");
}

// Files OpenCV refuses with multi-line texts of its own, or logs about, give one densert line.
TEST(Classify, UndecodableImagesGiveOneLineEach) {
  testing::TempDir dir;
  const std::string png = std::string(
      "\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\x01\x86\xa0\0\x01\x86\xa0\x08\0\0\0\0\0\0\0\0\0\0\0\0IEND"
      "\0\0\0\0",
      45);
  ASSERT_TRUE(testing::write_file(dir.file("huge.png"), png));
  ASSERT_TRUE(testing::write_file(
      dir.file("cut.webp"), std::string("RIFF\x32\0\0\0WEBPVP8 ", 16) + std::string(13, '\0')));
  const std::string bag = source_dir() + "/examples/images/bag.png";
  const CommandResult result =
      densert("classify --top 1 " + dir.file("huge.png") + " " + dir.file("cut.webp") + " " + bag);
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.stderr_text,
            "densert: " + dir.file("huge.png") +
                ": 100000x100000 pixels is more than densert decodes (128 megapixels)\n"
                "densert: " +
                dir.file("cut.webp") +
                ": truncated WebP (RIFF chunk of 58 bytes, file of 29)\n"
                "densert: 2 of 3 images could not be classified\n");
}

// x [N,3,2,2] (and x2 for two inputs) -> op -> y, as ONNX opset 13.
void write_elementwise_model(const std::string& path, const std::string& op, int inputs) {
  onnx::ModelProto model;
  model.set_ir_version(7);
  model.add_opset_import()->set_version(13);
  onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("elementwise");
  const auto declare = [](onnx::ValueInfoProto* value, const std::string& name) {
    value->set_name(name);
    auto* tensor = value->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(onnx::TensorProto::FLOAT);
    tensor->mutable_shape()->add_dim()->set_dim_param("N");
    for (int64_t d : {3, 2, 2})
      tensor->mutable_shape()->add_dim()->set_dim_value(d);
  };
  onnx::NodeProto* node = graph->add_node();
  node->set_op_type(op);
  node->set_name(op);
  for (int i = 0; i < inputs; ++i) {
    const std::string name = i == 0 ? "x" : "x" + std::to_string(i + 1);
    declare(graph->add_input(), name);
    node->add_input(name);
  }
  node->add_output("y");
  declare(graph->add_output(), "y");
  std::ofstream out(path, std::ios::binary);
  ASSERT_TRUE(model.SerializeToOstream(&out));
}

TEST(Run, AnInputGivenTwiceIsRefused) {
  testing::TempDir dir;
  write_elementwise_model(dir.file("add.onnx"), "Add", 2);
  ASSERT_TRUE(write_npy(dir.file("x.npy"), Tensor({1, 3, 2, 2})).ok());
  const CommandResult result = densert("run -m " + dir.file("add.onnx") +
                                       " -i x=" + dir.file("x.npy") + " -i x=" + dir.file("x.npy"));
  EXPECT_EQ(result.exit_code, 4);
  EXPECT_EQ(result.stderr_text, "densert: bad argument: input \"x\" given twice\n");
}

TEST(Run, StatisticsOfAnAllNanOutputAreNan) {
  testing::TempDir dir;
  write_elementwise_model(dir.file("identity.onnx"), "Identity", 1);
  Tensor nan({1, 3, 2, 2});
  std::fill(nan.data.begin(), nan.data.end(), NAN);
  ASSERT_TRUE(write_npy(dir.file("nan.npy"), nan).ok());
  const CommandResult result = densert("run --engine reference -m " + dir.file("identity.onnx") +
                                       " -i " + dir.file("nan.npy"));
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  EXPECT_EQ(result.stdout_text, "y: f32[1,3,2,2] min nan max nan mean nan\n");
}

// x [N, dims...] -> Identity -> each of `outputs`, as ONNX opset 13.
void write_identity_model(const std::string& path, const std::vector<std::string>& outputs,
                          const std::vector<int64_t>& dims) {
  onnx::ModelProto model;
  model.set_ir_version(7);
  model.add_opset_import()->set_version(13);
  onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("identity");
  const auto declare = [&](onnx::ValueInfoProto* value, const std::string& name) {
    value->set_name(name);
    auto* tensor = value->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(onnx::TensorProto::FLOAT);
    tensor->mutable_shape()->add_dim()->set_dim_param("N");
    for (int64_t d : dims)
      tensor->mutable_shape()->add_dim()->set_dim_value(d);
  };
  declare(graph->add_input(), "x");
  for (const std::string& name : outputs) {
    onnx::NodeProto* node = graph->add_node();
    node->set_op_type("Identity");
    node->set_name("to " + name);
    node->add_input("x");
    node->add_output(name);
    declare(graph->add_output(), name);
  }
  std::ofstream out(path, std::ios::binary);
  ASSERT_TRUE(model.SerializeToOstream(&out));
}

// Two output names that make one file name each get a numbered file.
TEST(Run, OutputsWhoseFileNamesCollideAreNumbered) {
  testing::TempDir dir;
  write_identity_model(dir.file("m.onnx"), {"y/1", "y_1"}, {2});
  Tensor x({1, 2});
  x.data = {1.5f, -2.0f};
  ASSERT_TRUE(write_npy(dir.file("x.npy"), x).ok());
  const CommandResult result = densert("run -m " + dir.file("m.onnx") + " -i " + dir.file("x.npy") +
                                       " -o " + dir.file("out.npy"));
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  for (const char* name : {"out.0.y_1.npy", "out.1.y_1.npy"}) {
    Expected<Tensor> written = read_npy(dir.file(name));
    ASSERT_TRUE(written.ok()) << name;
    EXPECT_EQ(written->data, x.data);
  }
}

// Inputs are allocated only when they fit: 65536 images of 3x1024x1024 would take 768 GiB.
TEST(Bench, InputsLargerThanMemoryAreRefused) {
  testing::TempDir dir;
  write_identity_model(dir.file("m.onnx"), {"y"}, {3, 1024, 1024});
  const CommandResult result = densert("bench --batch 65536 -m " + dir.file("m.onnx"));
  EXPECT_EQ(result.exit_code, 4);
  EXPECT_EQ(result.stderr_text.rfind(
                "densert: bad argument: --batch 65536: the inputs alone take 768 GiB, more than "
                "half of this machine's memory (",
                0),
            0u)
      << result.stderr_text;
}

// A device, a link to nothing and a subfolder's link to a real image: each bad one is one line
// and the good one is still classified.
TEST(Classify, DevicesAndBrokenLinksFailOneLineEach) {
  testing::TempDir dir;
  const std::filesystem::path root(dir.path());
  std::filesystem::create_symlink("/nonexistent/gone.png", root / "gone.png");
  std::filesystem::create_directory(root / "sub");
  std::filesystem::create_symlink(source_dir() + "/examples/images/bag.png",
                                  root / "sub" / "bag_link.png");
  const CommandResult result = densert("classify --top 1 -r " + dir.path() + " /dev/zero");
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.stderr_text, "densert: " + dir.file("gone.png") +
                                    ": is a link to nothing\n"
                                    "densert: /dev/zero: is a device, pipe or socket, not a file\n"
                                    "densert: 2 of 3 images could not be classified\n");
  EXPECT_NE(result.stdout_text.find("bag_link.png"), std::string::npos) << result.stdout_text;
  EXPECT_NE(result.stdout_text.find(" bag "), std::string::npos) << result.stdout_text;
}

// A newline in a file name is written as \n, so that each error stays one line.
TEST(Classify, ControlCharactersInNamesAreEscaped) {
  testing::TempDir dir;
  ASSERT_TRUE(testing::write_file(dir.file("bad\nname.png"), ""));
  const CommandResult result = densert("classify " + dir.path());
  EXPECT_EQ(result.exit_code, 4);
  EXPECT_EQ(result.stderr_text, "densert: " + dir.path() +
                                    "/bad\\nname.png: file is empty (0 bytes)\n"
                                    "densert: 1 of 1 images could not be classified\n");
}

// JSON output stays valid when a label or a file name is not UTF-8.
TEST(Classify, JsonReplacesBytesThatAreNotUtf8) {
  testing::TempDir dir;
  std::string labels;
  for (int i = 0; i < 9; ++i)
    labels += "label " + std::to_string(i) + "\n";
  labels += "bad \xff\xfe label\n";
  ASSERT_TRUE(testing::write_file(dir.file("labels.txt"), labels));
  const CommandResult result =
      densert("classify --json --top 10 --labels " + dir.file("labels.txt") + " " + source_dir() +
              "/examples/images/bag.png");
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  const nlohmann::json record = nlohmann::json::parse(result.stdout_text, nullptr, false);
  ASSERT_FALSE(record.is_discarded()) << result.stdout_text;
  ASSERT_EQ(record["top"].size(), 10u);
  bool replaced = false;
  for (const auto& entry : record["top"])
    replaced = replaced || entry["label"] == "bad \xEF\xBF\xBD\xEF\xBF\xBD label";
  EXPECT_TRUE(replaced) << result.stdout_text;
}

// A BMP cut short makes OpenCV print its own error; a JPEG whose data ends before its end
// marker makes libjpeg warn and fill the rest with grey. Each gives one densert line.
TEST(Classify, DecoderMessagesStayOffTheTerminal) {
  testing::TempDir dir;
  cv::Mat noise(64, 64, CV_8UC3);
  cv::randu(noise, 0, 255);
  std::vector<unsigned char> bmp, jpeg;
  ASSERT_TRUE(cv::imencode(".bmp", noise, bmp));
  ASSERT_TRUE(cv::imencode(".jpg", noise, jpeg));
  ASSERT_TRUE(testing::write_file(dir.file("cut.bmp"),
                                  std::string(bmp.begin(), bmp.begin() + bmp.size() / 2)));
  ASSERT_TRUE(testing::write_file(
      dir.file("cut.jpg"), std::string(jpeg.begin(), jpeg.begin() + jpeg.size() / 2) + "\xFF\xD9"));
  const CommandResult result =
      densert("classify --top 1 " + dir.file("cut.bmp") + " " + dir.file("cut.jpg") + " " +
              source_dir() + "/examples/images/bag.png");
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.stderr_text, "densert: " + dir.file("cut.bmp") +
                                    ": not a readable image (JPEG, PNG, BMP, WebP or TIFF)\n"
                                    "densert: " +
                                    dir.file("cut.jpg") +
                                    ": corrupt JPEG data (the image data ends early)\n"
                                    "densert: 2 of 3 images could not be classified\n");
}

TEST(Evaluate, BadClassFoldersAreBadArguments) {
  testing::TempDir dir;
  const std::filesystem::path root(dir.path());
  std::filesystem::create_directories(root / "big" / "99999999999999999999");
  std::filesystem::create_directories(root / "ten" / "10");
  std::filesystem::create_directory(root / "loop");
  std::filesystem::create_symlink("x", root / "loop" / "x");
  const std::pair<std::string, std::string> cases[] = {
      {"big", (root / "big" / "99999999999999999999").string() +
                  ": class index 99999999999999999999 is not below the model's 10 classes"},
      {"ten", (root / "ten" / "10").string() + ": class index 10 is not below the model's 10 "
                                               "classes"},
      {"loop", "no labelled images found"},
  };
  for (const auto& [folder, message] : cases) {
    const CommandResult result = densert("evaluate --dir " + (root / folder).string());
    EXPECT_EQ(result.exit_code, 4) << folder;
    EXPECT_EQ(result.stderr_text, "densert: bad argument: " + message + "\n") << folder;
  }
}

}  // namespace
}  // namespace densert
