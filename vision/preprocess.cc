// Image decoding and preprocessing with OpenCV. Pixels become float before resizing, and the
// resize is bilinear with half-pixel centres, which is what torchvision's Resize does on
// tensors (antialias off); PIL's resize, which torchvision uses on PIL images, also
// low-pass filters when shrinking, so results differ slightly from a PIL pipeline.
#include "vision/preprocess.h"

#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace densert {
namespace {

Status bad_image(const std::string& name, const std::string& cause) {
  return Status::bad_argument(name + ": " + cause);
}

// Decoders may accept a file cut short and fill the rest with grey; catch the common cases
// from the container structure first.
std::string truncation_cause(const std::vector<unsigned char>& b) {
  const size_t n = b.size();
  if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) {
    // A JPEG ends with the EOI marker, possibly followed by padding.
    for (size_t i = n; i-- > 2 && i + 64 > n;) {
      if (b[i - 1] == 0xFF && b[i] == 0xD9) return "";
    }
    return "truncated JPEG (no end-of-image marker)";
  }
  static const unsigned char kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (n >= 8 && std::equal(kPng, kPng + 8, b.begin())) {
    static const char kEnd[] = "IEND";
    auto it = std::search(b.begin(), b.end(), kEnd, kEnd + 4);
    return it == b.end() ? "truncated PNG (no IEND chunk)" : "";
  }
  return "";
}

// Pixel values as float 0..255, in the model's colour order and channel count.
Expected<cv::Mat> to_model_colors(const cv::Mat& decoded, const Preprocessing& p,
                                  const std::string& name) {
  cv::Mat pixels;
  const double to_8bit = decoded.depth() == CV_16U  ? 255.0 / 65535.0
                         : decoded.depth() == CV_8U ? 1.0
                                                    : -1.0;
  if (to_8bit < 0) return bad_image(name, "unsupported pixel depth");
  decoded.convertTo(pixels, CV_32F, to_8bit);
  cv::Mat converted;
  const int channels = pixels.channels();
  switch (p.color) {
    case Preprocessing::Color::kGray:
      if (channels == 1) converted = pixels;
      if (channels == 3) cv::cvtColor(pixels, converted, cv::COLOR_BGR2GRAY);
      if (channels == 4) cv::cvtColor(pixels, converted, cv::COLOR_BGRA2GRAY);
      break;
    case Preprocessing::Color::kRgb:
      if (channels == 1) cv::cvtColor(pixels, converted, cv::COLOR_GRAY2RGB);
      if (channels == 3) cv::cvtColor(pixels, converted, cv::COLOR_BGR2RGB);
      if (channels == 4) cv::cvtColor(pixels, converted, cv::COLOR_BGRA2RGB);
      break;
    case Preprocessing::Color::kBgr:
      if (channels == 1) cv::cvtColor(pixels, converted, cv::COLOR_GRAY2BGR);
      if (channels == 3) converted = pixels;
      if (channels == 4) cv::cvtColor(pixels, converted, cv::COLOR_BGRA2BGR);
      break;
  }
  if (converted.empty()) return bad_image(name, "has " + std::to_string(channels) + " channels");
  return converted;
}

Expected<Tensor> preprocess_mat(const cv::Mat& decoded, const std::string& name,
                                const Preprocessing& p);

Expected<std::vector<float>> float_list(const nlohmann::json& value, const char* key) {
  std::vector<float> out;
  if (value.is_number()) return std::vector<float>{value.get<float>()};
  if (!value.is_array())
    return Status::bad_argument(std::string("preprocessing \"") + key +
                                "\" must be a number or a list");
  for (const auto& item : value) {
    if (!item.is_number())
      return Status::bad_argument(std::string("preprocessing \"") + key + "\" holds a non-number");
    out.push_back(item.get<float>());
  }
  return out;
}

}  // namespace

Preprocessing Preprocessing::imagenet() {
  Preprocessing p;
  p.resize = Resize::kShorterSideThenCenterCrop;
  p.resize_to = 256;
  p.height = p.width = 224;
  p.color = Color::kRgb;
  p.scale = 1.0f / 255.0f;
  p.mean = {0.485f, 0.456f, 0.406f};
  p.std = {0.229f, 0.224f, 0.225f};
  return p;
}

Preprocessing Preprocessing::caffe() {
  Preprocessing p;
  p.resize = Resize::kShorterSideThenCenterCrop;
  p.resize_to = 256;
  p.height = p.width = 224;
  p.color = Color::kBgr;
  // (pixel - mean) * 0.017, written as scale 1 and std 1/0.017.
  p.scale = 1.0f;
  p.mean = {103.94f, 116.78f, 123.68f};
  p.std = {1.0f / 0.017f, 1.0f / 0.017f, 1.0f / 0.017f};
  return p;
}

Expected<Preprocessing> preset_preprocessing(const std::string& name, const Dims& input_dims) {
  Preprocessing p;
  if (name == "imagenet") {
    p = Preprocessing::imagenet();
  } else if (name == "caffe") {
    p = Preprocessing::caffe();
  } else {
    return Status::bad_argument("unknown preprocessing preset \"" + name + "\" (imagenet, caffe)");
  }
  if (input_dims.size() == 4 && input_dims[2] > 0 && input_dims[3] > 0) {
    p.height = input_dims[2];
    p.width = input_dims[3];
  }
  return p;
}

Expected<Preprocessing> parse_preprocessing(const std::string& text, const Dims& input_dims) {
  nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return Status::bad_argument("preprocessing is not a JSON object: " + text.substr(0, 80));
  }
  Preprocessing p;
  if (input_dims.size() == 4) {
    p.height = input_dims[2];
    p.width = input_dims[3];
  }
  try {
    if (json.contains("resize")) {
      const std::string resize = json["resize"].get<std::string>();
      if (resize == "direct") {
        p.resize = Preprocessing::Resize::kDirect;
      } else if (resize == "shorter_side_center_crop") {
        p.resize = Preprocessing::Resize::kShorterSideThenCenterCrop;
        p.resize_to = json.value("resize_to", int64_t{256});
      } else {
        return Status::bad_argument("preprocessing resize \"" + resize +
                                    "\" is not direct or shorter_side_center_crop");
      }
    }
    if (json.contains("size")) {
      const auto size = json["size"].get<std::vector<int64_t>>();
      if (size.size() != 2 || size[0] <= 0 || size[1] <= 0) {
        return Status::bad_argument("preprocessing size must be [height, width]");
      }
      p.height = size[0];
      p.width = size[1];
    }
    if (json.contains("color")) {
      const std::string color = json["color"].get<std::string>();
      if (color == "rgb" || color == "RGB") {
        p.color = Preprocessing::Color::kRgb;
      } else if (color == "bgr" || color == "BGR") {
        p.color = Preprocessing::Color::kBgr;
      } else if (color == "gray" || color == "grey") {
        p.color = Preprocessing::Color::kGray;
      } else {
        return Status::bad_argument("preprocessing color \"" + color +
                                    "\" is not rgb, bgr or gray");
      }
    }
    if (json.contains("scale")) p.scale = json["scale"].get<float>();
    if (json.contains("mean")) {
      DENSERT_ASSIGN_OR_RETURN(p.mean, float_list(json["mean"], "mean"));
    }
    if (json.contains("std")) {
      DENSERT_ASSIGN_OR_RETURN(p.std, float_list(json["std"], "std"));
    }
    if (json.contains("layout") && json["layout"].get<std::string>() != "NCHW") {
      return Status::unsupported("preprocessing layout \"" + json["layout"].get<std::string>() +
                                 "\"; densert feeds NCHW");
    }
  } catch (const nlohmann::json::exception& e) {
    return Status::bad_argument(std::string("preprocessing has a field of the wrong type: ") +
                                e.what());
  }
  for (float s : p.std) {
    if (s == 0.0f) return Status::bad_argument("preprocessing std has a zero");
  }
  return p;
}

Expected<Preprocessing> preprocessing_from_metadata(
    const std::map<std::string, std::string>& metadata, const Dims& input_dims) {
  auto it = metadata.find(kPreprocessKey);
  if (it == metadata.end()) {
    // Without metadata, a 3-channel 224x224 model is most likely a torchvision one.
    Preprocessing p = Preprocessing::imagenet();
    if (input_dims.size() == 4) {
      p.height = input_dims[2];
      p.width = input_dims[3];
      if (input_dims[1] == 1) {
        p.color = Preprocessing::Color::kGray;
        p.mean = {0.5f};
        p.std = {0.5f};
      }
    }
    return p;
  }
  Expected<Preprocessing> parsed = parse_preprocessing(it->second, input_dims);
  if (!parsed.ok())
    return parsed.status().with_context(std::string("model metadata ") + kPreprocessKey);
  return parsed;
}

Expected<Tensor> decode_image(const std::vector<unsigned char>& bytes, const std::string& name,
                              const Preprocessing& p) {
  if (bytes.empty()) return bad_image(name, "file is empty (0 bytes)");
  if (std::string cause = truncation_cause(bytes); !cause.empty()) return bad_image(name, cause);
  cv::Mat decoded;
  try {
    decoded = cv::imdecode(bytes, cv::IMREAD_UNCHANGED | cv::IMREAD_ANYDEPTH | cv::IMREAD_ANYCOLOR);
  } catch (const cv::Exception& e) {
    return bad_image(name, "cannot be decoded: " + e.msg);
  }
  if (decoded.empty())
    return bad_image(name, "not a readable image (JPEG, PNG, BMP, WebP or TIFF)");
  return preprocess_mat(decoded, name, p);
}

Expected<Tensor> preprocess_pixels(const unsigned char* pixels, int height, int width, int channels,
                                   const Preprocessing& p) {
  if (!pixels || height <= 0 || width <= 0 || (channels != 1 && channels != 3)) {
    return Status::bad_argument("pixels must be 8-bit with 1 or 3 channels and a positive size");
  }
  const cv::Mat image(height, width, channels == 1 ? CV_8UC1 : CV_8UC3,
                      const_cast<unsigned char*>(pixels));
  return preprocess_mat(image, "pixels", p);
}

namespace {

Expected<Tensor> preprocess_mat(const cv::Mat& decoded, const std::string& name,
                                const Preprocessing& p) {
  DENSERT_ASSIGN_OR_RETURN(cv::Mat pixels, to_model_colors(decoded, p, name));

  cv::Mat resized;
  if (p.resize == Preprocessing::Resize::kShorterSideThenCenterCrop) {
    // As torchvision: the shorter side becomes resize_to, the other keeps the aspect ratio
    // (truncated), then the crop is centred with rounding.
    const int h = pixels.rows, w = pixels.cols;
    int new_h, new_w;
    if (h <= w) {
      new_h = static_cast<int>(p.resize_to);
      new_w = static_cast<int>(static_cast<int64_t>(p.resize_to) * w / h);
    } else {
      new_w = static_cast<int>(p.resize_to);
      new_h = static_cast<int>(static_cast<int64_t>(p.resize_to) * h / w);
    }
    cv::Mat scaled;
    cv::resize(pixels, scaled, cv::Size(new_w, new_h), 0, 0, cv::INTER_LINEAR);
    if (p.height > new_h || p.width > new_w) {
      return bad_image(name, "is smaller than the crop after resizing");
    }
    const int top = static_cast<int>(std::lround((new_h - p.height) / 2.0));
    const int left = static_cast<int>(std::lround((new_w - p.width) / 2.0));
    resized =
        scaled(cv::Rect(left, top, static_cast<int>(p.width), static_cast<int>(p.height))).clone();
  } else if (pixels.rows == p.height && pixels.cols == p.width) {
    resized = pixels;
  } else {
    cv::resize(pixels, resized, cv::Size(static_cast<int>(p.width), static_cast<int>(p.height)), 0,
               0, cv::INTER_LINEAR);
  }

  const int channels = resized.channels();
  Tensor tensor({1, channels, p.height, p.width});
  const int64_t plane = p.height * p.width;
  for (int y = 0; y < resized.rows; ++y) {
    const float* row = resized.ptr<float>(y);
    for (int x = 0; x < resized.cols; ++x) {
      for (int c = 0; c < channels; ++c) {
        const float mean = p.mean[p.mean.size() == 1 ? 0 : c];
        const float std = p.std[p.std.size() == 1 ? 0 : c];
        tensor.data[c * plane + y * p.width + x] = (row[x * channels + c] * p.scale - mean) / std;
      }
    }
  }
  return tensor;
}

}  // namespace

Expected<Tensor> load_image(const std::string& path, const Preprocessing& p) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return bad_image(path, "cannot be opened");
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(file)),
                                   std::istreambuf_iterator<char>());
  if (file.bad()) return bad_image(path, "cannot be read");
  return decode_image(bytes, path, p);
}

Expected<std::vector<std::string>> read_labels(const std::string& path) {
  std::ifstream file(path);
  if (!file) return Status::bad_argument(path + ": cannot open labels file");
  std::vector<std::string> labels;
  std::string line;
  while (std::getline(file, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    labels.push_back(line);
  }
  while (!labels.empty() && labels.back().empty())
    labels.pop_back();
  return labels;
}

Expected<std::vector<std::string>> labels_from_metadata(
    const std::map<std::string, std::string>& metadata) {
  auto it = metadata.find(kLabelsKey);
  if (it == metadata.end()) return std::vector<std::string>{};
  nlohmann::json json = nlohmann::json::parse(it->second, nullptr, false);
  if (json.is_discarded() || !json.is_array()) {
    return Status::invalid_model(std::string("model metadata ") + kLabelsKey +
                                 " is not a JSON array");
  }
  std::vector<std::string> labels;
  for (const auto& item : json) {
    if (!item.is_string())
      return Status::invalid_model(std::string("model metadata ") + kLabelsKey +
                                   " holds a non-string");
    labels.push_back(item.get<std::string>());
  }
  return labels;
}

}  // namespace densert
