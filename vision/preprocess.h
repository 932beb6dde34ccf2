// Turning image files into model inputs: decoding with OpenCV, colour conversion, resizing,
// cropping and normalisation, described per model and read from its metadata.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "runtime/ir.h"

namespace densert {

struct Preprocessing {
  enum class Resize {
    kDirect,                     // resize straight to height x width
    kShorterSideThenCenterCrop,  // shorter side to resize_to, then a centered crop
  };
  enum class Color { kRgb, kBgr, kGray };

  Resize resize = Resize::kDirect;
  int64_t resize_to = 0;  // shorter side for kShorterSideThenCenterCrop
  int64_t height = 0;     // model input size
  int64_t width = 0;
  Color color = Color::kRgb;
  float scale = 1.0f / 255.0f;  // applied to 8-bit pixel values before mean and std
  std::vector<float> mean = {0.0f};
  std::vector<float> std = {1.0f};

  // torchvision's ImageNet models: shorter side 256, centre crop 224, RGB, ImageNet statistics.
  static Preprocessing imagenet();
  // Caffe-era DenseNets: BGR, per-channel mean subtraction on 0..255 values, then scale 0.017.
  static Preprocessing caffe();
};

// Metadata key holding the preprocessing as a JSON object, and the one holding class names.
inline constexpr const char* kPreprocessKey = "densert.preprocess";
inline constexpr const char* kLabelsKey = "densert.labels";

// Reads a model's preprocessing from its metadata_props; fills height and width from the
// model's input when the metadata leaves them out. Bad metadata is an invalid model.
Expected<Preprocessing> preprocessing_from_metadata(
    const std::map<std::string, std::string>& metadata, const Dims& input_dims);
// Parses the JSON form used in metadata and on the command line. Unknown keys are refused, and
// the size must match the model input where the model fixes it.
Expected<Preprocessing> parse_preprocessing(const std::string& json, const Dims& input_dims);
// Named presets: "imagenet", "caffe".
Expected<Preprocessing> preset_preprocessing(const std::string& name, const Dims& input_dims);

// Decodes an image file and returns a [1, C, H, W] float tensor ready for the model. Errors
// name the file and the cause (unreadable, truncated, not an image, too many pixels). The
// first image decoded sets OpenCV's process-wide log level to silent: densert reports decoder
// failures itself, in one line.
Expected<Tensor> load_image(const std::string& path, const Preprocessing& preprocessing);
// The same from bytes already in memory; `name` is used in messages.
Expected<Tensor> decode_image(const std::vector<unsigned char>& bytes, const std::string& name,
                              const Preprocessing& preprocessing);

// Preprocesses raw 8-bit pixels (channels 1: gray, 3: BGR), e.g. from an IDX data set.
Expected<Tensor> preprocess_pixels(const unsigned char* pixels, int height, int width, int channels,
                                   const Preprocessing& preprocessing);

// Class names from a file with one label per line; with classes > 0 the file must name exactly
// that many.
Expected<std::vector<std::string>> read_labels(const std::string& path, int64_t classes);
// Class names from the model's metadata (a JSON array), empty if absent; with classes > 0 the
// array must hold exactly that many.
Expected<std::vector<std::string>> labels_from_metadata(
    const std::map<std::string, std::string>& metadata, int64_t classes);

}  // namespace densert
