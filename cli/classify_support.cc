// Model preparation and output ranking shared by the image commands.
#include "cli/classify_support.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <numeric>

#include "cli/model_source.h"

namespace densert::cli {

Expected<Tensor> load_image_quietly(const std::string& path, const Preprocessing& preprocessing) {
  static FILE* const scratch = std::tmpfile();
  const int saved = scratch ? dup(STDERR_FILENO) : -1;
  if (saved < 0) return load_image(path, preprocessing);
  std::fflush(stderr);
  // The scratch file and stderr share one offset once duplicated: rewinding one rewinds both.
  lseek(fileno(scratch), 0, SEEK_SET);
  const bool truncated = ftruncate(fileno(scratch), 0) == 0;
  dup2(fileno(scratch), STDERR_FILENO);
  Expected<Tensor> image = load_image(path, preprocessing);
  std::fflush(stderr);
  std::cerr.flush();
  dup2(saved, STDERR_FILENO);
  close(saved);

  std::string printed(4096, '\0');
  const ssize_t got = truncated ? pread(fileno(scratch), printed.data(), printed.size(), 0) : 0;
  printed.resize(got > 0 ? static_cast<size_t>(got) : 0);
  if (image.ok() && printed.find("premature end of data segment") != std::string::npos) {
    return Status::bad_argument(path + ": corrupt JPEG data (the image data ends early)");
  }
  return image;
}

Expected<Classifier> make_classifier(const ClassifierOptions& options) {
  DENSERT_ASSIGN_OR_RETURN(Graph graph, load_model(options.model));
  if (graph.inputs.size() != 1 || graph.outputs.empty()) {
    return Status::unsupported("an image classifier takes one input, this model takes " +
                               std::to_string(graph.inputs.size()));
  }
  const Dims input_dims = graph.value(graph.inputs[0]).dims;
  if (input_dims.size() != 4 || (input_dims[1] != 1 && input_dims[1] != 3)) {
    return Status::unsupported("model input has shape " + dims_to_string(input_dims) +
                               ", expected [N,1 or 3,H,W]");
  }
  Classifier classifier;
  if (!options.preprocess_json.empty()) {
    DENSERT_ASSIGN_OR_RETURN(classifier.preprocessing,
                             parse_preprocessing(options.preprocess_json, input_dims));
  } else if (!options.preset.empty()) {
    DENSERT_ASSIGN_OR_RETURN(classifier.preprocessing,
                             preset_preprocessing(options.preset, input_dims));
  } else {
    DENSERT_ASSIGN_OR_RETURN(classifier.preprocessing,
                             preprocessing_from_metadata(graph.metadata, input_dims));
  }
  const int64_t model_channels = input_dims[1];
  const int64_t preprocess_channels =
      classifier.preprocessing.color == Preprocessing::Color::kGray ? 1 : 3;
  if (model_channels != preprocess_channels) {
    return Status::bad_argument("preprocessing produces " + std::to_string(preprocess_channels) +
                                " channels, the model takes " + std::to_string(model_channels));
  }
  const ValueId output = graph.outputs[0];
  const Dims& output_dims = graph.value(output).dims;
  if (output_dims.empty() || output_dims.back() <= 0) {
    return Status::unsupported("model output has shape " + dims_to_string(output_dims) +
                               ", expected [N,classes]");
  }
  const NodeId producer = graph.value(output).producer;
  classifier.outputs_probabilities = producer >= 0 && graph.nodes[producer].op == OpType::kSoftmax;
  classifier.classes = output_dims.back();
  if (!options.labels_file.empty()) {
    DENSERT_ASSIGN_OR_RETURN(classifier.labels,
                             read_labels(options.labels_file, classifier.classes));
  } else {
    DENSERT_ASSIGN_OR_RETURN(classifier.labels,
                             labels_from_metadata(graph.metadata, classifier.classes));
  }

  EngineOptions engine_options;
  engine_options.threads = options.threads;
  DENSERT_ASSIGN_OR_RETURN(classifier.engine, Engine::create(std::move(graph), engine_options));
  return classifier;
}

std::vector<std::vector<float>> class_probabilities(const Classifier& classifier,
                                                    const Tensor& output) {
  const int64_t images = output.dims[0];
  const int64_t classes = output.numel() / std::max<int64_t>(images, 1);
  std::vector<std::vector<float>> result;
  for (int64_t i = 0; i < images; ++i) {
    std::vector<float> row(output.data.begin() + i * classes,
                           output.data.begin() + (i + 1) * classes);
    if (!classifier.outputs_probabilities) {
      const float max_logit = *std::max_element(row.begin(), row.end());
      double sum = 0.0;
      for (float& v : row) {
        v = std::exp(v - max_logit);
        sum += v;
      }
      for (float& v : row)
        v = static_cast<float>(v / sum);
    }
    result.push_back(std::move(row));
  }
  return result;
}

std::vector<std::pair<int64_t, float>> top_k(const std::vector<float>& probabilities, int64_t k) {
  std::vector<int64_t> order(probabilities.size());
  std::iota(order.begin(), order.end(), 0);
  k = std::min<int64_t>(k, static_cast<int64_t>(order.size()));
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int64_t a, int64_t b) { return probabilities[a] > probabilities[b]; });
  std::vector<std::pair<int64_t, float>> top;
  for (int64_t i = 0; i < k; ++i)
    top.emplace_back(order[i], probabilities[order[i]]);
  return top;
}

Tensor stack_images(const std::vector<Tensor>& images) {
  Dims dims = images.front().dims;
  dims[0] = static_cast<int64_t>(images.size());
  Tensor batch(dims);
  const int64_t each = images.front().numel();
  for (size_t i = 0; i < images.size(); ++i) {
    std::copy(images[i].data.begin(), images[i].data.end(),
              batch.data.begin() + static_cast<int64_t>(i) * each);
  }
  return batch;
}

}  // namespace densert::cli
