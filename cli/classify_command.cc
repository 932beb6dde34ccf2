// `densert classify`: images (files or folders) through an image classifier, printed as an
// aligned table or as JSON lines. A file that cannot be read is reported and skipped.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/classify_support.h"
#include "cli/commands.h"

namespace densert::cli {
namespace {

struct ClassifyOptions {
  ClassifierOptions classifier;
  std::vector<std::string> paths;
  bool recursive = false;
  int64_t top = 5;
  int64_t batch = 1;
  bool json = false;
};

bool has_image_extension(const std::filesystem::path& path) {
  static const std::set<std::string> kExtensions = {".jpg", ".jpeg", ".png", ".bmp", ".webp",
                                                    ".tif", ".tiff", ".pgm", ".ppm"};
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return kExtensions.count(ext) > 0;
}

// Adds the image files of `folder` (and with `recursive` of its subfolders, but not of folders
// it links to, which could loop) to `found`. A folder that cannot be read, or a link to an
// image that is not there, is one error; the rest of the walk goes on.
void collect_folder(const std::filesystem::path& folder, bool recursive,
                    std::vector<std::string>* found, std::vector<std::string>* errors) {
  std::error_code error;
  std::filesystem::directory_iterator it(folder, error);
  std::vector<std::filesystem::path> subfolders;
  for (const std::filesystem::directory_iterator end; !error && it != end; it.increment(error)) {
    const std::filesystem::directory_entry& entry = *it;
    std::error_code entry_error;
    const bool link = entry.is_symlink(entry_error);
    if (!link && entry.is_directory(entry_error)) {
      if (recursive) subfolders.push_back(entry.path());
      continue;
    }
    if (!has_image_extension(entry.path())) continue;
    if (entry.is_regular_file(entry_error)) {
      found->push_back(entry.path().string());
    } else if (link && !entry.exists(entry_error)) {
      errors->push_back(entry.path().string() + ": is a link to nothing");
    }
  }
  if (error) errors->push_back(folder.string() + ": cannot be read: " + error.message());
  for (const auto& subfolder : subfolders)
    collect_folder(subfolder, recursive, found, errors);
}

// Files named on the command line are taken as they are; folders contribute their image
// files, sorted, descending into subfolders with --recursive.
std::vector<std::string> collect_files(const ClassifyOptions& options,
                                       std::vector<std::string>* errors) {
  std::vector<std::string> files;
  for (const std::string& path : options.paths) {
    std::error_code error;
    if (!std::filesystem::is_directory(path, error)) {
      files.push_back(path);
      continue;
    }
    std::vector<std::string> found;
    collect_folder(path, options.recursive, &found, errors);
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

void show_progress(size_t done, size_t total) {
  const int width = 30;
  const int filled = static_cast<int>(width * done / std::max<size_t>(total, 1));
  std::fprintf(stderr, "\r[%.*s%*s] %zu/%zu", filled,
               "==============================", width - filled, "", done, total);
  if (done == total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

int run_classify(const ClassifyOptions& options) {
  Expected<Classifier> classifier = make_classifier(options.classifier);
  if (!classifier.ok()) return report(classifier.status());
  std::vector<std::string> errors;
  const std::vector<std::string> files = collect_files(options, &errors);
  for (const std::string& error : errors)
    print_error(error);
  if (files.empty()) {
    std::fprintf(stderr, "densert: no images found\n");
    return kExitInput;
  }
  const bool progress = files.size() >= 50 && isatty(STDERR_FILENO) && !options.json;
  size_t width = 0;
  for (const std::string& f : files)
    width = std::max(width, f.size());

  int failed = static_cast<int>(errors.size());
  size_t classified = 0;
  size_t done = 0;
  for (size_t begin = 0; begin < files.size(); begin += static_cast<size_t>(options.batch)) {
    const size_t end = std::min(files.size(), begin + static_cast<size_t>(options.batch));
    std::vector<Tensor> images;
    std::vector<std::string> names;
    for (size_t i = begin; i < end; ++i) {
      Expected<Tensor> image = load_image_quietly(files[i], classifier->preprocessing);
      if (!image.ok()) {
        if (progress) std::fprintf(stderr, "\r");
        print_error(image.status().message());
        ++failed;
        continue;
      }
      images.push_back(std::move(image).value());
      names.push_back(files[i]);
    }
    done = end;
    if (images.empty()) continue;
    Expected<std::vector<Tensor>> outputs = classifier->engine->run({stack_images(images)});
    if (!outputs.ok()) return report(outputs.status());
    classified += names.size();
    const auto probabilities = class_probabilities(*classifier, outputs->front());
    for (size_t i = 0; i < names.size(); ++i) {
      const auto top = top_k(probabilities[i], options.top);
      if (options.json) {
        nlohmann::json record = {{"path", names[i]}, {"top", nlohmann::json::array()}};
        for (const auto& [index, p] : top) {
          record["top"].push_back(
              {{"label", classifier->label(index)}, {"index", index}, {"probability", p}});
        }
        std::printf("%s\n",
                    record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      } else {
        if (progress) std::fprintf(stderr, "\r%*s\r", 50, "");
        std::printf("%-*s", static_cast<int>(width), names[i].c_str());
        for (const auto& [index, p] : top)
          std::printf("  %s %.3f", classifier->label(index).c_str(), p);
        std::printf("\n");
      }
    }
    std::fflush(stdout);
    if (progress) show_progress(done, files.size());
  }
  if (failed > 0) {
    std::fprintf(stderr, "densert: %d of %zu images could not be classified\n", failed,
                 files.size() + errors.size());
    // Exit code 1 promises that the rest were processed; with no rest, the input is wrong.
    return classified > 0 ? kExitSomeInputsFailed : kExitInput;
  }
  return kExitOk;
}

}  // namespace

void add_classifier_options(CLI::App* sub, ClassifierOptions& options) {
  sub->add_option("--model,-m", options.model,
                  "ONNX model (default: the built-in Fashion-MNIST DenseNet)");
  sub->add_option("--labels", options.labels_file,
                  "Class names, one per line (default: from the model)");
  sub->add_option("--preset", options.preset, "Preprocessing preset: imagenet or caffe")
      ->check(CLI::IsMember({"imagenet", "caffe"}));
  sub->add_option("--preprocess", options.preprocess_json,
                  "Preprocessing as JSON, overriding the model's (see README)");
  sub->add_option("--threads", options.threads, "Threads (default: physical cores)")
      ->check(thread_count());
}

Command add_classify_command(CLI::App& app) {
  auto options = std::make_shared<ClassifyOptions>();
  CLI::App* sub = app.add_subcommand("classify", "Classify image files or folders of images");
  sub->add_option("images", options->paths, "Image files or folders")->required();
  add_classifier_options(sub, options->classifier);
  sub->add_flag("--recursive,-r", options->recursive, "Descend into subfolders");
  sub->add_option("--top,-k", options->top, "Classes to show per image (default 5)")
      ->check(at_least(1));
  sub->add_option("--batch", options->batch, "Images per engine run (default 1)")
      ->check(batch_size());
  sub->add_flag("--json", options->json, "One JSON object per image");
  return [options] { return run_classify(*options); };
}

}  // namespace densert::cli
