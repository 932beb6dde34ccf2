// Image decoding and preprocessing with OpenCV. Pixels become float before resizing, and the
// resize is bilinear with half-pixel centres, which is what torchvision's Resize does on
// tensors (antialias off); PIL's resize, which torchvision uses on PIL images, also
// low-pass filters when shrinking, so results differ slightly from a PIL pipeline.
#include "vision/preprocess.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <set>
#include <sstream>
#include <tuple>

#include "runtime/host.h"

namespace densert {
namespace {

Status bad_image(const std::string& name, const std::string& cause) {
  return Status::bad_argument(name + ": " + cause);
}

// Beyond these, decoding and the float copies of the pixels take gigabytes: a file that claims
// more is refused before it is decoded, where its header can be read.
constexpr int64_t kMaxPixels = int64_t{1} << 27;
constexpr int64_t kMaxSide = 8192;

std::string pixels_cause(int64_t width, int64_t height) {
  return std::to_string(width) + "x" + std::to_string(height) +
         " pixels is more than densert decodes (" + std::to_string(kMaxPixels >> 20) +
         " megapixels)";
}

uint32_t big_endian32(const unsigned char* b) {
  return uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | uint32_t{b[3]};
}

// Width and height from a PNG, JPEG or BMP header, {-1, -1} for other formats or when the
// header is not where it should be (the decoder then reports it).
std::pair<int64_t, int64_t> header_size(const std::vector<unsigned char>& b) {
  const size_t n = b.size();
  static const unsigned char kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (n >= 24 && std::equal(kPng, kPng + 8, b.begin()) &&
      std::equal(b.begin() + 12, b.begin() + 16, "IHDR")) {
    return {big_endian32(&b[16]), big_endian32(&b[20])};
  }
  if (n >= 26 && b[0] == 'B' && b[1] == 'M') {
    const auto little32 = [&](size_t at) {
      return static_cast<int32_t>(uint32_t{b[at]} | uint32_t{b[at + 1]} << 8 |
                                  uint32_t{b[at + 2]} << 16 | uint32_t{b[at + 3]} << 24);
    };
    return {std::abs(int64_t{little32(18)}), std::abs(int64_t{little32(22)})};
  }
  if (n >= 4 && b[0] == 0xFF && b[1] == 0xD8) {
    // Walk the marker segments to the start of frame (SOF0..SOF15 but DHT, JPG and DAC).
    size_t at = 2;
    while (at + 9 < n && b[at] == 0xFF) {
      const unsigned char marker = b[at + 1];
      const size_t length = size_t{b[at + 2]} << 8 | b[at + 3];
      if (marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC)
        return {int64_t{b[at + 7]} << 8 | b[at + 8], int64_t{b[at + 5]} << 8 | b[at + 6]};
      at += 2 + length;
    }
  }
  return {-1, -1};
}

// OpenCV logs decoder failures (a truncated WebP prints half a dozen lines) on stderr; densert
// reports them itself, in one line. This sets OpenCV's process-wide log level once.
void silence_opencv_logging() {
  static std::once_flag once;
  std::call_once(once, [] {
    cv::utils::logging::setLogLevel(cv::utils::logging::LogLevel::LOG_LEVEL_SILENT);
  });
}

// OpenCV's exception text spans lines and names its own source files; keep its one-line cause.
std::string opencv_cause(const cv::Exception& e) {
  if (e.func == "validateInputImageSize") return "image is larger than OpenCV decodes";
  std::string cause = e.err.empty() ? std::string("unknown OpenCV error") : e.err;
  std::replace(cause.begin(), cause.end(), '\n', ' ');
  return cause;
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
  // A WebP is one RIFF chunk whose header gives its length. (OpenCV 4.6 prints its own
  // exception on stderr for a WebP too short for its header.)
  if (n >= 12 && std::equal(b.begin(), b.begin() + 4, "RIFF") &&
      std::equal(b.begin() + 8, b.begin() + 12, "WEBP")) {
    const size_t riff_size =
        size_t{b[4]} | size_t{b[5]} << 8 | size_t{b[6]} << 16 | size_t{b[7]} << 24;
    if (n < riff_size + 8)
      return "truncated WebP (RIFF chunk of " + std::to_string(riff_size + 8) + " bytes, file of " +
             std::to_string(n) + ")";
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

namespace {

// The model input's height and width when the model fixes them, {0, 0} when it does not.
std::pair<int64_t, int64_t> model_image_size(const Dims& input_dims) {
  if (input_dims.size() == 4 && input_dims[2] > 0 && input_dims[3] > 0)
    return {input_dims[2], input_dims[3]};
  return {0, 0};
}

std::string size_string(int64_t height, int64_t width) {
  return dims_to_string({height, width});
}

// The checks every preprocessing passes, whatever it came from, so that a bad size or a short
// mean list is reported here rather than inside OpenCV or as a read past the list.
Status validate(const Preprocessing& p, const Dims& input_dims) {
  const auto [model_height, model_width] = model_image_size(input_dims);
  if (p.height <= 0 || p.width <= 0) {
    return Status::bad_argument("preprocessing needs \"size\": the model input " +
                                dims_to_string(input_dims) + " has no fixed height and width");
  }
  if (model_height > 0 && (p.height != model_height || p.width != model_width)) {
    return Status::bad_argument("preprocessing size " + size_string(p.height, p.width) +
                                " does not match the model input " +
                                size_string(model_height, model_width));
  }
  if (p.height > kMaxSide || p.width > kMaxSide) {
    return Status::bad_argument("preprocessing size " + size_string(p.height, p.width) +
                                " is larger than " + std::to_string(kMaxSide) + " pixels a side");
  }
  if (p.resize == Preprocessing::Resize::kShorterSideThenCenterCrop) {
    // The shorter side becomes resize_to, so a larger crop would not fit.
    if (p.resize_to < std::max(p.height, p.width)) {
      return Status::bad_argument("preprocessing resize_to " + std::to_string(p.resize_to) +
                                  " is smaller than the crop size " +
                                  size_string(p.height, p.width));
    }
    if (p.resize_to > kMaxSide) {
      return Status::bad_argument("preprocessing resize_to " + std::to_string(p.resize_to) +
                                  " is larger than " + std::to_string(kMaxSide));
    }
  }
  const size_t channels = p.color == Preprocessing::Color::kGray ? 1 : 3;
  for (const auto& [key, values] : {std::pair{"mean", &p.mean}, std::pair{"std", &p.std}}) {
    if (values->size() != 1 && values->size() != channels) {
      return Status::bad_argument(std::string("preprocessing ") + key + " has " +
                                  std::to_string(values->size()) + " values, expected " +
                                  (channels == 1 ? "1" : "1 or 3 (one per channel)"));
    }
  }
  for (float s : p.std) {
    if (s == 0.0f) return Status::bad_argument("preprocessing std has a zero");
  }
  // A value beyond float's range (1e39 reads as infinity) or a denormal std would turn every
  // pixel into infinity or NaN.
  const auto finite = [](float v) { return std::isfinite(v); };
  if (!finite(p.scale) || p.scale == 0.0f)
    return Status::bad_argument("preprocessing scale must be a finite number other than 0");
  if (!std::all_of(p.mean.begin(), p.mean.end(), finite))
    return Status::bad_argument("preprocessing mean must hold finite numbers");
  for (float s : p.std) {
    if (!std::isnormal(s))
      return Status::bad_argument("preprocessing std must hold finite numbers of at least 1e-38");
  }
  return Status();
}

}  // namespace

Expected<Preprocessing> preset_preprocessing(const std::string& name, const Dims& input_dims) {
  Preprocessing p;
  if (name == "imagenet") {
    p = Preprocessing::imagenet();
  } else if (name == "caffe") {
    p = Preprocessing::caffe();
  } else {
    return Status::bad_argument("unknown preprocessing preset \"" + name + "\" (imagenet, caffe)");
  }
  if (const auto [height, width] = model_image_size(input_dims); height > 0) {
    p.height = height;
    p.width = width;
  }
  DENSERT_RETURN_IF_ERROR(validate(p, input_dims));
  return p;
}

Expected<Preprocessing> parse_preprocessing(const std::string& text, const Dims& input_dims) {
  nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return Status::bad_argument("preprocessing is not a JSON object: " + text.substr(0, 80));
  }
  // A misspelt key would otherwise leave its default in place without a word.
  static const std::set<std::string> kKeys = {"resize", "resize_to", "size", "color",
                                              "scale",  "mean",      "std",  "layout"};
  for (const auto& item : json.items()) {
    if (!kKeys.count(item.key())) {
      return Status::bad_argument("preprocessing has an unknown key \"" + item.key() +
                                  "\" (known: resize, resize_to, size, color, scale, mean, std, "
                                  "layout)");
    }
  }
  const auto wrong = [](const std::string& key, const std::string& expected) {
    return Status::bad_argument("preprocessing \"" + key + "\" must be " + expected);
  };
  const auto text_of = [&](const std::string& key) -> Expected<std::string> {
    if (!json[key].is_string()) return wrong(key, "a string");
    return json[key].get<std::string>();
  };
  Preprocessing p;
  std::tie(p.height, p.width) = model_image_size(input_dims);
  if (json.contains("resize")) {
    DENSERT_ASSIGN_OR_RETURN(const std::string resize, text_of("resize"));
    if (resize == "direct") {
      p.resize = Preprocessing::Resize::kDirect;
    } else if (resize == "shorter_side_center_crop") {
      p.resize = Preprocessing::Resize::kShorterSideThenCenterCrop;
      p.resize_to = 256;  // unless resize_to says otherwise
    } else {
      return Status::bad_argument("preprocessing resize \"" + resize +
                                  "\" is not direct or shorter_side_center_crop");
    }
  }
  if (json.contains("resize_to")) {
    if (p.resize != Preprocessing::Resize::kShorterSideThenCenterCrop) {
      return Status::bad_argument(
          "preprocessing resize_to needs \"resize\": \"shorter_side_center_crop\"");
    }
    if (!json["resize_to"].is_number_integer()) return wrong("resize_to", "a whole number");
    p.resize_to = json["resize_to"].get<int64_t>();
  }
  if (json.contains("size")) {
    const nlohmann::json& size = json["size"];
    if (!size.is_array() || size.size() != 2 || !size[0].is_number_integer() ||
        !size[1].is_number_integer() || size[0].get<int64_t>() <= 0 ||
        size[1].get<int64_t>() <= 0) {
      return Status::bad_argument(
          "preprocessing size must be [height, width], two positive whole numbers");
    }
    p.height = size[0].get<int64_t>();
    p.width = size[1].get<int64_t>();
  }
  if (json.contains("color")) {
    DENSERT_ASSIGN_OR_RETURN(const std::string color, text_of("color"));
    if (color == "rgb" || color == "RGB") {
      p.color = Preprocessing::Color::kRgb;
    } else if (color == "bgr" || color == "BGR") {
      p.color = Preprocessing::Color::kBgr;
    } else if (color == "gray" || color == "grey") {
      p.color = Preprocessing::Color::kGray;
    } else {
      return Status::bad_argument("preprocessing color \"" + color + "\" is not rgb, bgr or gray");
    }
  }
  if (json.contains("scale")) {
    if (!json["scale"].is_number()) return wrong("scale", "a number");
    p.scale = json["scale"].get<float>();
  }
  if (json.contains("mean")) {
    DENSERT_ASSIGN_OR_RETURN(p.mean, float_list(json["mean"], "mean"));
  }
  if (json.contains("std")) {
    DENSERT_ASSIGN_OR_RETURN(p.std, float_list(json["std"], "std"));
  }
  if (json.contains("layout")) {
    DENSERT_ASSIGN_OR_RETURN(const std::string layout, text_of("layout"));
    if (layout != "NCHW")
      return Status::bad_argument("preprocessing layout \"" + layout + "\": densert feeds NCHW");
  }
  DENSERT_RETURN_IF_ERROR(validate(p, input_dims));
  return p;
}

Expected<Preprocessing> preprocessing_from_metadata(
    const std::map<std::string, std::string>& metadata, const Dims& input_dims) {
  auto it = metadata.find(kPreprocessKey);
  if (it == metadata.end()) {
    // Without metadata, a 3-channel 224x224 model is most likely a torchvision one.
    Preprocessing p = Preprocessing::imagenet();
    if (input_dims.size() == 4) {
      if (const auto [height, width] = model_image_size(input_dims); height > 0) {
        p.height = height;
        p.width = width;
      }
      if (input_dims[1] == 1) {
        p.color = Preprocessing::Color::kGray;
        p.mean = {0.5f};
        p.std = {0.5f};
      }
    }
    return p;
  }
  Expected<Preprocessing> parsed = parse_preprocessing(it->second, input_dims);
  if (!parsed.ok()) {
    // Wrong metadata is a fault of the model file, not of the caller.
    const ErrorKind kind = parsed.status().kind() == ErrorKind::kUnsupported
                               ? ErrorKind::kUnsupported
                               : ErrorKind::kInvalidModel;
    return Status(
        kind, std::string("model metadata ") + kPreprocessKey + ": " + parsed.status().message());
  }
  return parsed;
}

Expected<Tensor> decode_image(const std::vector<unsigned char>& bytes, const std::string& name,
                              const Preprocessing& p) {
  if (bytes.empty()) return bad_image(name, "file is empty (0 bytes)");
  if (std::string cause = truncation_cause(bytes); !cause.empty()) return bad_image(name, cause);
  if (const auto [width, height] = header_size(bytes); width >= 0) {
    if (width == 0 || height == 0) {
      return bad_image(
          name, "header gives " + std::to_string(width) + "x" + std::to_string(height) + " pixels");
    }
    if (width * height > kMaxPixels) return bad_image(name, pixels_cause(width, height));
  }
  silence_opencv_logging();
  cv::Mat decoded;
  try {
    decoded = cv::imdecode(bytes, cv::IMREAD_UNCHANGED | cv::IMREAD_ANYDEPTH | cv::IMREAD_ANYCOLOR);
  } catch (const cv::Exception& e) {
    return bad_image(name, "cannot be decoded: " + opencv_cause(e));
  }
  if (decoded.empty())
    return bad_image(name, "not a readable image (JPEG, PNG, BMP, WebP or TIFF)");
  if (static_cast<int64_t>(decoded.total()) > kMaxPixels)
    return bad_image(name, pixels_cause(decoded.cols, decoded.rows));
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

Expected<Tensor> resize_and_normalize(const cv::Mat& decoded, const std::string& name,
                                      const Preprocessing& p) {
  DENSERT_ASSIGN_OR_RETURN(cv::Mat pixels, to_model_colors(decoded, p, name));

  cv::Mat resized;
  if (p.resize == Preprocessing::Resize::kShorterSideThenCenterCrop) {
    // As torchvision: the shorter side becomes resize_to, the other keeps the aspect ratio
    // (truncated), then the crop is centred with rounding.
    const int64_t h = pixels.rows, w = pixels.cols;
    int64_t new_h, new_w;
    if (h <= w) {
      new_h = p.resize_to;
      new_w = p.resize_to * w / h;
    } else {
      new_w = p.resize_to;
      new_h = p.resize_to * h / w;
    }
    // A very thin image grows along its long side by as much as its short side does.
    if (new_h * new_w > kMaxPixels) {
      return bad_image(name, "resizing its " + std::to_string(w) + "x" + std::to_string(h) +
                                 " pixels gives " + std::to_string(new_w) + "x" +
                                 std::to_string(new_h) + ", more than densert handles (" +
                                 std::to_string(kMaxPixels >> 20) + " megapixels)");
    }
    cv::Mat scaled;
    cv::resize(pixels, scaled, cv::Size(static_cast<int>(new_w), static_cast<int>(new_h)), 0, 0,
               cv::INTER_LINEAR);
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

Expected<Tensor> preprocess_mat(const cv::Mat& decoded, const std::string& name,
                                const Preprocessing& p) {
  // Preprocessing is validated when it is made; OpenCV can still refuse what no check foresaw.
  try {
    return resize_and_normalize(decoded, name, p);
  } catch (const cv::Exception& e) {
    return bad_image(name, "cannot be preprocessed: " + opencv_cause(e));
  }
}

// The whole file, or the reason it cannot be read.
Expected<std::vector<unsigned char>> read_file(const std::string& path) {
  DENSERT_RETURN_IF_ERROR(check_regular_file(path, "a file"));
  std::ifstream file(path, std::ios::binary);
  if (!file) return Status::bad_argument(path + ": cannot be opened");
  std::vector<unsigned char> bytes;
  std::vector<char> chunk(1 << 16);
  while (file.read(chunk.data(), static_cast<std::streamsize>(chunk.size())) || file.gcount() > 0)
    bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + file.gcount());
  if (file.bad()) return Status::bad_argument(path + ": cannot be read");
  return bytes;
}

}  // namespace

Expected<Tensor> load_image(const std::string& path, const Preprocessing& p) {
  DENSERT_ASSIGN_OR_RETURN(std::vector<unsigned char> bytes, read_file(path));
  return decode_image(bytes, path, p);
}

Expected<std::vector<std::string>> read_labels(const std::string& path, int64_t classes) {
  Expected<std::vector<unsigned char>> bytes = read_file(path);
  if (!bytes.ok()) return Status::bad_argument("labels file " + bytes.status().message());
  std::vector<std::string> labels;
  std::string line;
  std::istringstream lines(std::string(bytes->begin(), bytes->end()));
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    labels.push_back(line);
  }
  while (!labels.empty() && labels.back().empty())
    labels.pop_back();
  if (classes > 0 && static_cast<int64_t>(labels.size()) != classes) {
    return Status::bad_argument("labels file " + path + " has " + std::to_string(labels.size()) +
                                " names, the model has " + std::to_string(classes) + " classes");
  }
  return labels;
}

Expected<std::vector<std::string>> labels_from_metadata(
    const std::map<std::string, std::string>& metadata, int64_t classes) {
  auto it = metadata.find(kLabelsKey);
  if (it == metadata.end()) return std::vector<std::string>{};
  const std::string where = std::string("model metadata ") + kLabelsKey;
  nlohmann::json json = nlohmann::json::parse(it->second, nullptr, false);
  if (json.is_discarded() || !json.is_array())
    return Status::invalid_model(where + " is not a JSON array");
  std::vector<std::string> labels;
  for (const auto& item : json) {
    if (!item.is_string()) return Status::invalid_model(where + " holds a non-string");
    labels.push_back(item.get<std::string>());
  }
  if (classes > 0 && static_cast<int64_t>(labels.size()) != classes) {
    return Status::invalid_model(where + " has " + std::to_string(labels.size()) +
                                 " names, the model has " + std::to_string(classes) + " classes");
  }
  return labels;
}

}  // namespace densert
