// What classify and evaluate share: preparing a model for images (engine, preprocessing,
// labels) and turning its outputs into ranked class probabilities.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/engine/engine.h"
#include "vision/preprocess.h"

namespace densert::cli {

struct ClassifierOptions {
  std::string model;  // empty: the built-in model
  std::string labels_file;
  std::string preset;           // "imagenet", "caffe" or empty
  std::string preprocess_json;  // overrides the model's metadata
  int threads = 0;
};

struct Classifier {
  std::shared_ptr<Engine> engine;
  Preprocessing preprocessing;
  std::vector<std::string> labels;
  bool outputs_probabilities = false;  // the model ends in Softmax
  int64_t classes = 0;

  std::string label(int64_t index) const {
    return index < static_cast<int64_t>(labels.size()) ? labels[index]
                                                       : "class " + std::to_string(index);
  }
};

Expected<Classifier> make_classifier(const ClassifierOptions& options);

// Per image of a [N, classes] output: every class probability (softmax unless the model
// already outputs probabilities).
std::vector<std::vector<float>> class_probabilities(const Classifier& classifier,
                                                    const Tensor& output);

// The k most probable classes, best first.
std::vector<std::pair<int64_t, float>> top_k(const std::vector<float>& probabilities, int64_t k);

// load_image, with what the decoders print kept off the terminal. OpenCV and the codecs under
// it (libpng, libjpeg, libtiff) write their own lines on stderr, for files densert reports in
// one line anyway and as warnings for files that decode; while the command decodes, stderr goes
// to a scratch file. One of those warnings does mean a broken file: libjpeg's "premature end of
// data segment", after which it fills the rest of the image with grey; that image fails. Call it
// from one thread: stderr is the process's.
Expected<Tensor> load_image_quietly(const std::string& path, const Preprocessing& preprocessing);

// Joins [1, C, H, W] tensors into one [N, C, H, W] batch.
Tensor stack_images(const std::vector<Tensor>& images);

}  // namespace densert::cli
