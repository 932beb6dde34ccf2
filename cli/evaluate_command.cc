// `densert evaluate`: accuracy of a classifier on a labelled set (IDX files as in MNIST, or
// one folder per class), with throughput and the classes it confuses most.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>

#include "cli/classify_support.h"
#include "cli/commands.h"
#include "vision/idx.h"

namespace densert::cli {
namespace {

constexpr const char* kFashionMnistImages =
    "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
constexpr const char* kFashionMnistLabels =
    "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz";

struct EvaluateOptions {
  ClassifierOptions classifier;
  std::string idx_images;
  std::string idx_labels;
  std::string folder;
  int64_t batch = 64;
  int64_t limit = 0;
};

struct Sample {
  std::string name;
  int64_t label;
  const unsigned char* pixels = nullptr;  // IDX samples
};

int run_evaluate(const EvaluateOptions& options) {
  Expected<Classifier> classifier = make_classifier(options.classifier);
  if (!classifier.ok()) return report(classifier.status());
  const Preprocessing& preprocessing = classifier->preprocessing;

  std::vector<Sample> samples;
  std::vector<unsigned char> pixels;
  std::vector<int64_t> image_dims;
  if (!options.folder.empty()) {
    // One folder per class, named after the class label (or its index).
    std::map<std::string, int64_t> by_name;
    for (size_t i = 0; i < classifier->labels.size(); ++i)
      by_name[classifier->labels[i]] = static_cast<int64_t>(i);
    std::error_code error;
    std::vector<std::filesystem::path> classes;
    std::filesystem::directory_iterator it(options.folder, error);
    for (const std::filesystem::directory_iterator end; !error && it != end; it.increment(error)) {
      std::error_code entry_error;
      if (it->is_directory(entry_error)) classes.push_back(it->path());
    }
    if (error) {
      return report(Status::bad_argument(options.folder + ": cannot be read: " + error.message()));
    }
    std::sort(classes.begin(), classes.end());
    for (const auto& dir : classes) {
      const std::string name = dir.filename().string();
      int64_t label = -1;
      if (by_name.count(name)) {
        label = by_name[name];
      } else if (!name.empty() && std::all_of(name.begin(), name.end(), ::isdigit)) {
        const auto [end, parsed] = std::from_chars(name.data(), name.data() + name.size(), label);
        if (parsed != std::errc() || label >= classifier->classes) {
          return report(Status::bad_argument(dir.string() + ": class index " + name +
                                             " is not below the model's " +
                                             std::to_string(classifier->classes) + " classes"));
        }
      } else {
        return report(Status::bad_argument(
            dir.string() + ": folder name is neither a label of the model nor a class index"));
      }
      std::vector<std::string> files;
      std::filesystem::directory_iterator images(dir, error);
      for (const std::filesystem::directory_iterator end; !error && images != end;
           images.increment(error)) {
        std::error_code entry_error;
        if (images->is_regular_file(entry_error)) files.push_back(images->path().string());
      }
      if (error)
        return report(Status::bad_argument(dir.string() + ": cannot be read: " + error.message()));
      std::sort(files.begin(), files.end());
      for (const auto& f : files)
        samples.push_back({f, label, nullptr});
    }
  } else {
    const std::string images_path =
        options.idx_images.empty() ? kFashionMnistImages : options.idx_images;
    const std::string labels_path =
        options.idx_labels.empty() ? kFashionMnistLabels : options.idx_labels;
    Expected<IdxArray> images = read_idx(images_path, 3);
    if (!images.ok()) return report(images.status());
    Expected<IdxArray> labels = read_idx(labels_path, 1);
    if (!labels.ok()) return report(labels.status());
    image_dims = images->dims;
    if (image_dims[1] == 0 || image_dims[2] == 0) {
      return report(Status::bad_argument(images_path + ": IDX images of " +
                                         std::to_string(image_dims[1]) + "x" +
                                         std::to_string(image_dims[2]) + " pixels"));
    }
    if (labels->dims[0] != image_dims[0]) {
      return report(Status::bad_argument("IDX files disagree: " + std::to_string(image_dims[0]) +
                                         " images, " + std::to_string(labels->dims[0]) +
                                         " labels"));
    }
    pixels = std::move(images->values);
    const int64_t plane = image_dims[1] * image_dims[2];
    for (int64_t i = 0; i < image_dims[0]; ++i) {
      samples.push_back(
          {images_path + "#" + std::to_string(i), labels->values[i], pixels.data() + i * plane});
    }
  }
  if (options.limit > 0 && static_cast<int64_t>(samples.size()) > options.limit)
    samples.resize(options.limit);
  if (samples.empty()) return report(Status::bad_argument("no labelled images found"));

  const int64_t classes = classifier->classes;
  // Per true class, how often each class was predicted: sparse, since a model may have many
  // classes of which a test set shows a few.
  std::vector<std::map<int64_t, int64_t>> confusion(static_cast<size_t>(classes));
  int64_t top1 = 0, top5 = 0, evaluated = 0, failed = 0;
  double engine_seconds = 0.0;
  for (size_t begin = 0; begin < samples.size(); begin += static_cast<size_t>(options.batch)) {
    const size_t end = std::min(samples.size(), begin + static_cast<size_t>(options.batch));
    std::vector<Tensor> images;
    std::vector<int64_t> labels;
    for (size_t i = begin; i < end; ++i) {
      const Sample& s = samples[i];
      Expected<Tensor> image =
          s.pixels ? preprocess_pixels(s.pixels, static_cast<int>(image_dims[1]),
                                       static_cast<int>(image_dims[2]), 1, preprocessing)
                   : load_image_quietly(s.name, preprocessing);
      if (!image.ok() || s.label < 0 || s.label >= classes) {
        print_error(image.ok() ? s.name + ": label " + std::to_string(s.label) + " is out of range"
                               : image.status().message());
        ++failed;
        continue;
      }
      images.push_back(std::move(image).value());
      labels.push_back(s.label);
    }
    if (images.empty()) continue;
    const auto start = std::chrono::steady_clock::now();
    Expected<std::vector<Tensor>> outputs = classifier->engine->run({stack_images(images)});
    engine_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!outputs.ok()) return report(outputs.status());
    const auto probabilities = class_probabilities(*classifier, outputs->front());
    for (size_t i = 0; i < labels.size(); ++i) {
      const auto top = top_k(probabilities[i], 5);
      top1 += top[0].first == labels[i];
      top5 +=
          std::any_of(top.begin(), top.end(), [&](const auto& t) { return t.first == labels[i]; });
      ++confusion[labels[i]][top[0].first];
      ++evaluated;
    }
  }
  if (evaluated == 0) return report(Status::bad_argument("no image could be evaluated"));
  std::printf("images      %lld (%lld failed)\n", static_cast<long long>(evaluated),
              static_cast<long long>(failed));
  std::printf("top-1       %.2f%%\n", 100.0 * top1 / evaluated);
  std::printf("top-5       %.2f%%\n", 100.0 * top5 / evaluated);
  std::printf("throughput  %.1f images/s (engine only, batch %lld, %d threads)\n",
              evaluated / engine_seconds, static_cast<long long>(options.batch),
              classifier->engine->summary().threads);
  // The worst classes by recall, each with the class it is most often taken for.
  std::vector<std::pair<double, int64_t>> recall;
  for (int64_t c = 0; c < classes; ++c) {
    int64_t total = 0;
    for (const auto& [predicted, count] : confusion[c])
      total += count;
    const auto right = confusion[c].find(c);
    const int64_t correct = right == confusion[c].end() ? 0 : right->second;
    if (total > 0) recall.emplace_back(static_cast<double>(correct) / total, c);
  }
  std::sort(recall.begin(), recall.end());
  std::printf("worst classes:\n");
  for (size_t i = 0; i < std::min<size_t>(3, recall.size()); ++i) {
    const int64_t c = recall[i].second;
    int64_t confused = -1, confused_count = 0;
    for (const auto& [predicted, count] : confusion[c]) {
      if (predicted != c && count > confused_count) {
        confused = predicted;
        confused_count = count;
      }
    }
    std::printf("  %-20s recall %.2f%%, most often taken for %s (%lld)\n",
                classifier->label(c).c_str(), 100.0 * recall[i].first,
                confused >= 0 ? classifier->label(confused).c_str() : "-",
                static_cast<long long>(confused_count));
  }
  return failed > 0 ? kExitSomeInputsFailed : kExitOk;
}

}  // namespace

Command add_evaluate_command(CLI::App& app) {
  auto options = std::make_shared<EvaluateOptions>();
  CLI::App* sub = app.add_subcommand(
      "evaluate",
      "Accuracy on a labelled set (default: the Fashion-MNIST test set, for the built-in model)");
  add_classifier_options(sub, options->classifier);
  CLI::Option* idx_images =
      sub->add_option("--idx-images", options->idx_images, "IDX image file (.gz or raw)");
  CLI::Option* idx_labels =
      sub->add_option("--idx-labels", options->idx_labels, "IDX label file (.gz or raw)");
  // Images of one set scored against the labels of another would give a meaningless accuracy.
  idx_images->needs(idx_labels);
  idx_labels->needs(idx_images);
  sub->add_option("--dir", options->folder, "Folder with one subfolder of images per class")
      ->excludes(idx_images)
      ->excludes(idx_labels);
  sub->add_option("--batch", options->batch, "Images per engine run (default 64)")
      ->check(batch_size());
  sub->add_option("--limit", options->limit, "Evaluate at most this many images")
      ->check(at_least(0));
  return [options] { return run_evaluate(*options); };
}

}  // namespace densert::cli
