// The public C and C++ APIs: null safety, error kinds and messages, and one model shared by
// several threads giving the single-threaded results.
#include <densert/densert.h>

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <densert/densert.hpp>

#include <fstream>
#include <iterator>
#include <string>
#include <thread>

#include "runtime/npy.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_support.h"

namespace {

using densert::testing::fixture_dir;

std::string cifar_model() {
  return fixture_dir() + "/densenet_bc_cifar.onnx";
}

// The built-in Fashion-MNIST model (10 classes) with one metadata entry replaced.
std::string fashion_model_with_metadata(const std::string& key, const std::string& value) {
  std::ifstream file(densert::testing::source_dir() + "/models/fashion_densenet.onnx",
                     std::ios::binary);
  onnx::ModelProto model;
  EXPECT_TRUE(model.ParseFromIstream(&file));
  for (auto& prop : *model.mutable_metadata_props()) {
    if (prop.key() == key) prop.set_value(value);
  }
  std::string bytes;
  EXPECT_TRUE(model.SerializeToString(&bytes));
  return bytes;
}

TEST(CApi, EveryFunctionIsSafeOnNull) {
  EXPECT_EQ(densert_options_create(nullptr), DENSERT_BAD_ARGUMENT);
  EXPECT_EQ(densert_options_set_threads(nullptr, 1), DENSERT_BAD_ARGUMENT);
  EXPECT_EQ(densert_options_set_precision(nullptr, DENSERT_PRECISION_F32), DENSERT_BAD_ARGUMENT);
  EXPECT_EQ(densert_options_set_max_batch(nullptr, 1), DENSERT_BAD_ARGUMENT);
  densert_options_destroy(nullptr);
  densert_model* model = nullptr;
  EXPECT_EQ(densert_model_load_file(nullptr, nullptr, &model), DENSERT_BAD_ARGUMENT);
  EXPECT_EQ(densert_model_load_file("x.onnx", nullptr, nullptr), DENSERT_BAD_ARGUMENT);
  EXPECT_EQ(densert_model_load_memory(nullptr, 10, nullptr, &model), DENSERT_BAD_ARGUMENT);
  EXPECT_EQ(densert_model_load_memory("abc", 3, nullptr, nullptr), DENSERT_BAD_ARGUMENT);
  densert_model_destroy(nullptr);
  EXPECT_EQ(densert_model_input_count(nullptr), 0u);
  EXPECT_EQ(densert_model_output_count(nullptr), 0u);
  densert_tensor_info info;
  EXPECT_EQ(densert_model_input_info(nullptr, 0, &info), DENSERT_BAD_ARGUMENT);
  EXPECT_EQ(densert_model_output_info(nullptr, 0, &info), DENSERT_BAD_ARGUMENT);
  const char* label = nullptr;
  EXPECT_EQ(densert_model_label(nullptr, 0, &label), DENSERT_BAD_ARGUMENT);
  densert_context* context = nullptr;
  EXPECT_EQ(densert_context_create(nullptr, &context), DENSERT_BAD_ARGUMENT);
  densert_context_destroy(nullptr);
  EXPECT_EQ(densert_run(nullptr, 1, nullptr, 0, nullptr, 0), DENSERT_BAD_ARGUMENT);
  EXPECT_EQ(densert_load_image(nullptr, "x.png", nullptr, 0), DENSERT_BAD_ARGUMENT);
  EXPECT_STRNE(densert_last_error(), "");
}

TEST(CApi, ErrorsHaveKindsAndMessages) {
  densert_model* model = nullptr;
  EXPECT_EQ(densert_model_load_file("/nonexistent/model.onnx", nullptr, &model),
            DENSERT_BAD_ARGUMENT);
  EXPECT_EQ(std::string(densert_last_error()), "/nonexistent/model.onnx: cannot open model file");
  EXPECT_EQ(model, nullptr);
  EXPECT_EQ(densert_model_load_memory("not a model", 11, nullptr, &model), DENSERT_INVALID_MODEL);
  EXPECT_NE(std::string(densert_last_error()).find("not an ONNX model"), std::string::npos);

  densert_options* options = nullptr;
  ASSERT_EQ(densert_options_create(&options), DENSERT_OK);
  EXPECT_EQ(densert_options_set_threads(options, -1), DENSERT_BAD_ARGUMENT);
  EXPECT_EQ(densert_options_set_precision(options, static_cast<densert_precision>(7)),
            DENSERT_UNSUPPORTED);
  ASSERT_EQ(densert_options_set_max_batch(options, 2), DENSERT_OK);
  ASSERT_EQ(densert_model_load_file(cifar_model().c_str(), options, &model), DENSERT_OK)
      << densert_last_error();
  densert_options_destroy(options);
  EXPECT_STREQ(densert_last_error(), "");

  ASSERT_EQ(densert_model_input_count(model), 1u);
  densert_tensor_info info;
  ASSERT_EQ(densert_model_input_info(model, 0, &info), DENSERT_OK);
  EXPECT_STREQ(info.name, "input");
  EXPECT_EQ(info.rank, 4);
  EXPECT_EQ(info.dims[0], -1);
  EXPECT_EQ(info.dims[1], 3);
  EXPECT_EQ(info.dims[3], 32);
  EXPECT_EQ(densert_model_input_info(model, 1, &info), DENSERT_BAD_ARGUMENT);
  EXPECT_EQ(std::string(densert_last_error()),
            "densert_model_input_info: index 1 is out of range (1 tensors)");

  densert_context* context = nullptr;
  ASSERT_EQ(densert_context_create(model, &context), DENSERT_OK);
  std::vector<float> input(3 * 3 * 32 * 32, 0.5f), output(3 * 10);
  const float* inputs[] = {input.data()};
  float* outputs[] = {output.data()};
  EXPECT_EQ(densert_run(context, 3, inputs, 1, outputs, 1), DENSERT_BAD_ARGUMENT);
  EXPECT_EQ(std::string(densert_last_error()), "densert_run: batch 3 exceeds the maximum batch 2");
  EXPECT_EQ(densert_run(context, 1, inputs, 2, outputs, 1), DENSERT_BAD_ARGUMENT);
  const float* null_inputs[] = {nullptr};
  EXPECT_EQ(densert_run(context, 1, null_inputs, 1, outputs, 1), DENSERT_BAD_ARGUMENT);
  EXPECT_EQ(densert_run(context, 2, inputs, 1, outputs, 1), DENSERT_OK) << densert_last_error();
  densert_context_destroy(context);
  densert_model_destroy(model);
}

// Every call that returns a status resets densert_last_error(), not only the ones that can
// throw inside.
TEST(CApi, SuccessClearsTheLastError) {
  densert_options* options = nullptr;
  ASSERT_EQ(densert_options_create(&options), DENSERT_OK);
  EXPECT_EQ(densert_options_set_threads(options, -1), DENSERT_BAD_ARGUMENT);
  EXPECT_STRNE(densert_last_error(), "");
  EXPECT_EQ(densert_options_set_threads(options, 1), DENSERT_OK);
  EXPECT_STREQ(densert_last_error(), "");
  EXPECT_EQ(densert_options_set_max_batch(options, -1), DENSERT_BAD_ARGUMENT);
  EXPECT_STREQ(densert_last_error(), "densert_options_set_max_batch: max_batch -1 is negative");
  EXPECT_EQ(densert_options_set_max_batch(options, 0), DENSERT_OK);
  EXPECT_STREQ(densert_last_error(), "");
  EXPECT_EQ(densert_options_set_precision(options, static_cast<densert_precision>(7)),
            DENSERT_UNSUPPORTED);
  EXPECT_EQ(densert_options_set_precision(options, DENSERT_PRECISION_F32), DENSERT_OK);
  EXPECT_STREQ(densert_last_error(), "");

  densert_model* model = nullptr;
  ASSERT_EQ(densert_model_load_file(cifar_model().c_str(), options, &model), DENSERT_OK);
  densert_options_destroy(options);
  densert_tensor_info info;
  EXPECT_EQ(densert_model_output_info(model, 1, &info), DENSERT_BAD_ARGUMENT);
  EXPECT_EQ(densert_model_output_info(model, 0, &info), DENSERT_OK);
  EXPECT_STREQ(densert_last_error(), "");
  EXPECT_EQ(densert_model_input_info(model, 1, &info), DENSERT_BAD_ARGUMENT);
  EXPECT_EQ(densert_model_input_info(model, 0, &info), DENSERT_OK);
  EXPECT_STREQ(densert_last_error(), "");
  const char* label = nullptr;
  EXPECT_EQ(densert_model_label(model, -1, &label), DENSERT_BAD_ARGUMENT);
  EXPECT_STREQ(densert_last_error(), "densert_model_label: index -1 is negative");
  EXPECT_EQ(densert_model_label(model, 0, &label), DENSERT_OK);
  EXPECT_STREQ(densert_last_error(), "");
  EXPECT_EQ(label, nullptr);  // the CIFAR fixture has no labels
  densert_model_destroy(model);
}

TEST(CApi, ThreadCountIsBounded) {
  densert_options* options = nullptr;
  ASSERT_EQ(densert_options_create(&options), DENSERT_OK);
  EXPECT_EQ(densert_options_set_threads(options, DENSERT_MAX_THREADS), DENSERT_OK);
  EXPECT_EQ(densert_options_set_threads(options, DENSERT_MAX_THREADS + 1), DENSERT_BAD_ARGUMENT);
  EXPECT_STREQ(densert_last_error(),
               "densert_options_set_threads: threads 1025 is outside 0 to 1024");
  densert_options_destroy(options);
}

TEST(CApi, BadImagesAreBadArgumentsNamingTheFile) {
  densert_model* model = nullptr;
  ASSERT_EQ(densert_model_load_file(cifar_model().c_str(), nullptr, &model), DENSERT_OK);
  std::vector<float> input(3 * 32 * 32);
  densert::testing::TempDir dir;
  EXPECT_EQ(densert_load_image(model, dir.path().c_str(), input.data(), input.size()),
            DENSERT_BAD_ARGUMENT);
  EXPECT_EQ(std::string(densert_last_error()), dir.path() + ": is a folder, not a file");

  // A PNG header claiming 100000x100000 pixels, which OpenCV refuses with a multi-line text.
  const std::string png = std::string(
      "\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\x01\x86\xa0\0\x01\x86\xa0"
      "\x08\0\0\0\0\0\0\0\0\0\0\0\0IEND\0\0\0\0",
      45);
  const std::string huge = dir.file("huge.png");
  ASSERT_TRUE(densert::testing::write_file(huge, png));
  EXPECT_EQ(densert_load_image(model, huge.c_str(), input.data(), input.size()),
            DENSERT_BAD_ARGUMENT);
  EXPECT_EQ(std::string(densert_last_error()),
            huge + ": 100000x100000 pixels is more than densert decodes (128 megapixels)");
  densert_model_destroy(model);
}

TEST(CApi, LabelIndexMustBeBelowTheClassCount) {
  const std::string path = densert::testing::source_dir() + "/models/fashion_densenet.onnx";
  densert_model* model = nullptr;
  ASSERT_EQ(densert_model_load_file(path.c_str(), nullptr, &model), DENSERT_OK);
  const char* label = nullptr;
  ASSERT_EQ(densert_model_label(model, 9, &label), DENSERT_OK);
  EXPECT_STREQ(label, "ankle boot");
  EXPECT_EQ(densert_model_label(model, 10, &label), DENSERT_BAD_ARGUMENT);
  EXPECT_EQ(label, nullptr);
  EXPECT_STREQ(densert_last_error(),
               "densert_model_label: index 10 is not below the model's 10 classes");
  densert_model_destroy(model);
}

// A model whose metadata names too few classes still loads and runs; asking for a label says
// what is wrong with the metadata.
TEST(CApi, MetadataLabelsMustNameEveryClass) {
  const std::string bytes = fashion_model_with_metadata("densert.labels", R"(["a","b"])");
  densert_model* model = nullptr;
  ASSERT_EQ(densert_model_load_memory(bytes.data(), bytes.size(), nullptr, &model), DENSERT_OK)
      << densert_last_error();
  const char* label = "unset";
  EXPECT_EQ(densert_model_label(model, 0, &label), DENSERT_INVALID_MODEL);
  EXPECT_EQ(label, nullptr);
  EXPECT_STREQ(densert_last_error(),
               "model metadata densert.labels has 2 names, the model has 10 classes");
  densert_model_destroy(model);
}

TEST(CppApi, RunsAndThrowsTypedErrors) {
  densert::Model model = densert::Model::load(cifar_model());
  ASSERT_EQ(model.inputs().size(), 1u);
  EXPECT_EQ(model.inputs()[0].elements_per_image(), 3 * 32 * 32);
  densert::Context context(model);
  auto images = densert::read_npy(fixture_dir() + "/input_32.npy");
  ASSERT_TRUE(images.ok());
  const std::vector<float> logits =
      context.run(1, std::span<const float>(images->data.data(), 3 * 32 * 32));
  auto golden = densert::read_npy(fixture_dir() + "/densenet_bc_cifar.golden_b1.npy");
  ASSERT_TRUE(golden.ok());
  ASSERT_EQ(logits.size(), golden->data.size());
  for (size_t i = 0; i < logits.size(); ++i)
    EXPECT_NEAR(logits[i], golden->data[i], 1e-3f);

  try {
    context.run(2, std::span<const float>(images->data.data(), 10));
    FAIL() << "a short input must throw";
  } catch (const densert::Error& e) {
    EXPECT_EQ(e.status(), DENSERT_BAD_ARGUMENT);
    EXPECT_EQ(std::string(e.what()), "tensor \"input\" needs 6144 floats for batch 2, 10 given");
  }
  try {
    densert::Model::load("/nonexistent.onnx");
    FAIL() << "a missing file must throw";
  } catch (const densert::Error& e) {
    EXPECT_EQ(e.status(), DENSERT_BAD_ARGUMENT);
  }
}

// Four threads share one model, each with its own context and its own images; every result
// must equal the single-threaded one.
TEST(CppApi, OneModelManyThreads) {
  const densert::Model model = densert::Model::load(cifar_model());
  auto images = densert::read_npy(fixture_dir() + "/input_32.npy");
  ASSERT_TRUE(images.ok());
  const int64_t per_image = 3 * 32 * 32;
  const auto image = [&](int i) {
    return std::span<const float>(images->data.data() + i * per_image, per_image);
  };
  std::vector<std::vector<float>> expected;
  {
    densert::Context context(model);
    for (int i = 0; i < 8; ++i)
      expected.push_back(context.run(1, image(i)));
  }
  constexpr int kThreads = 4;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      densert::Context context(model);
      for (int round = 0; round < 10; ++round) {
        const int i = (t * 3 + round) % 8;
        if (context.run(1, image(i)) != expected[i]) ++mismatches[t];
      }
    });
  }
  for (auto& thread : threads)
    thread.join();
  for (int t = 0; t < kThreads; ++t)
    EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

}  // namespace
