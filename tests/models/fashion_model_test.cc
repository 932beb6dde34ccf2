// The built-in model on all 10,000 Fashion-MNIST test images through the fast engine: the
// accuracy recorded at training time, and agreement with PyTorch's own predictions.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "importer/onnx_importer.h"
#include "runtime/engine/engine.h"
#include "runtime/npy.h"
#include "tests/support/test_support.h"
#include "vision/idx.h"
#include "vision/preprocess.h"

namespace densert {
namespace {

using testing::argmax_row;
using testing::source_dir;

TEST(FashionModel, MatchesTrainingAccuracyAndPyTorchPredictions) {
  const std::string models = source_dir() + "/models";
  Expected<Graph> graph = import_onnx_file(models + "/fashion_densenet.onnx");
  ASSERT_TRUE(graph.ok()) << graph.status().to_string();
  std::ifstream record_file(models + "/fashion_densenet.json");
  const nlohmann::json record = nlohmann::json::parse(record_file);
  const double recorded_top1 = record.at("test_top1").get<double>();
  Expected<Tensor> pytorch = read_npy(models + "/fashion_densenet.predictions.npy");
  ASSERT_TRUE(pytorch.ok()) << pytorch.status().to_string();
  ASSERT_EQ(pytorch->numel(), 10000);

  Expected<IdxArray> images =
      read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", 3);
  Expected<IdxArray> labels =
      read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz", 1);
  ASSERT_TRUE(images.ok() && labels.ok());
  ASSERT_EQ(images->dims, (Dims{10000, 28, 28}));

  const Dims input_dims = graph->value(graph->inputs[0]).dims;
  Expected<Preprocessing> preprocessing = preprocessing_from_metadata(graph->metadata, input_dims);
  ASSERT_TRUE(preprocessing.ok()) << preprocessing.status().to_string();
  Expected<std::shared_ptr<Engine>> engine = Engine::create(std::move(*graph));
  ASSERT_TRUE(engine.ok()) << engine.status().to_string();
  EXPECT_EQ((*engine)->summary().reference_steps, 0);
  EXPECT_EQ((*engine)->summary().concat_bytes_copied, 0);

  constexpr int64_t kBatch = 100;
  int64_t correct = 0, agree = 0;
  for (int64_t begin = 0; begin < 10000; begin += kBatch) {
    Tensor batch({kBatch, 1, 28, 28});
    for (int64_t i = 0; i < kBatch; ++i) {
      Expected<Tensor> image =
          preprocess_pixels(images->values.data() + (begin + i) * 784, 28, 28, 1, *preprocessing);
      ASSERT_TRUE(image.ok());
      std::copy(image->data.begin(), image->data.end(), batch.data.begin() + i * 784);
    }
    Expected<std::vector<Tensor>> out = (*engine)->run({batch});
    ASSERT_TRUE(out.ok()) << out.status().to_string();
    for (int64_t i = 0; i < kBatch; ++i) {
      const int64_t predicted = argmax_row(out->front(), i);
      correct += predicted == labels->values[begin + i];
      agree += predicted == static_cast<int64_t>(pytorch->data[begin + i]);
    }
  }
  EXPECT_NEAR(100.0 * correct / 10000.0, 100.0 * recorded_top1, 0.05);
  EXPECT_GE(agree, 9990) << "top-1 agreement with PyTorch below 99.9%";
  EXPECT_GE(correct, 9200) << "below 92% top-1";
}

}  // namespace
}  // namespace densert
