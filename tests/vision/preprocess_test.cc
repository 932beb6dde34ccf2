// densert's preprocessing presets against torchvision's transforms on real photos, and the
// handling of unreadable image files.
#include "vision/preprocess.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "runtime/npy.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_support.h"
#include "vision/idx.h"

namespace densert {
namespace {

using testing::fixture_dir;
using testing::max_abs_diff;

struct PhotoCase {
  const char* photo;
  const char* preset;
};

void PrintTo(const PhotoCase& c, std::ostream* out) {
  *out << c.photo << " " << c.preset;
}

class PresetMatchesTorchvision : public ::testing::TestWithParam<PhotoCase> {};

TEST_P(PresetMatchesTorchvision, WithinToleranceAfterNormalisation) {
  const PhotoCase& c = GetParam();
  const std::string base = fixture_dir() + "/photo_" + c.photo;
  Expected<Preprocessing> preset = preset_preprocessing(c.preset, {kBatchDim, 3, 224, 224});
  ASSERT_TRUE(preset.ok());
  Expected<Tensor> ours = load_image(base + ".png", *preset);
  ASSERT_TRUE(ours.ok()) << ours.status().to_string();
  Expected<Tensor> expected = read_npy(base + "." + c.preset + ".npy");
  ASSERT_TRUE(expected.ok()) << expected.status().to_string();
  ASSERT_EQ(dims_to_string(ours->dims), "[1,3,224,224]");
  EXPECT_LE(max_abs_diff(*ours, *expected), 1e-3f) << c.photo << " " << c.preset;
}

INSTANTIATE_TEST_SUITE_P(
    Photos, PresetMatchesTorchvision,
    ::testing::Values(PhotoCase{"astronaut", "imagenet"}, PhotoCase{"coffee", "imagenet"},
                      PhotoCase{"chelsea", "imagenet"}, PhotoCase{"astronaut", "caffe"},
                      PhotoCase{"coffee", "caffe"}, PhotoCase{"chelsea", "caffe"}),
    [](const auto& info) { return std::string(info.param.photo) + "_" + info.param.preset; });

// PIL's resize low-pass filters when it shrinks; densert's bilinear resize does not. The gap
// is bounded here so that the README's statement about it stays true.
TEST(PresetMatchesTorchvision, PilAntialiasGapIsBounded) {
  Expected<Preprocessing> preset = preset_preprocessing("imagenet", {kBatchDim, 3, 224, 224});
  ASSERT_TRUE(preset.ok());
  Expected<Tensor> ours = load_image(fixture_dir() + "/photo_astronaut.png", *preset);
  Expected<Tensor> pil = read_npy(fixture_dir() + "/photo_astronaut.imagenet_pil.npy");
  ASSERT_TRUE(ours.ok() && pil.ok());
  double mean_diff = 0.0;
  for (size_t i = 0; i < pil->data.size(); ++i)
    mean_diff += std::fabs(ours->data[i] - pil->data[i]);
  mean_diff /= static_cast<double>(pil->data.size());
  EXPECT_GT(mean_diff, 1e-3);
  EXPECT_LT(mean_diff, 0.1);
}

std::string write_file(const std::string& name, const std::string& bytes) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

struct BadFile {
  const char* name;
  std::string bytes;
  const char* message;
};

std::string big_endian32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

std::string little_endian(uint32_t v, int bytes) {
  std::string out;
  for (int i = 0; i < bytes; ++i)
    out += static_cast<char>(v >> (8 * i));
  return out;
}

// A PNG whose header claims width x height, with an IEND so that it does not look cut short.
std::string png_claiming(uint32_t width, uint32_t height) {
  return std::string("\x89PNG\r\n\x1a\n", 8) + big_endian32(13) + "IHDR" + big_endian32(width) +
         big_endian32(height) + std::string("\x08\x00\x00\x00\x00", 5) + big_endian32(0) +
         big_endian32(0) + "IEND" + big_endian32(0);
}

// A baseline gray TIFF whose single strip claims side x side pixels.
std::string tiff_claiming(uint32_t side) {
  const std::pair<uint16_t, uint32_t> entries[] = {{256, side}, {257, side}, {258, 8},
                                                   {259, 1},    {262, 1},    {273, 200},
                                                   {277, 1},    {278, side}, {279, 10}};
  std::string tiff = std::string("II*\0", 4) + little_endian(8, 4) + little_endian(9, 2);
  for (const auto& [tag, value] : entries)
    tiff +=
        little_endian(tag, 2) + little_endian(4, 2) + little_endian(1, 4) + little_endian(value, 4);
  tiff += little_endian(0, 4);
  return tiff + std::string(210 - tiff.size(), '\0');
}

TEST(LoadImage, BadFilesGiveOneLineErrors) {
  const std::string png_header = "\x89PNG\r\n\x1a\n";
  const BadFile cases[] = {
      {"empty.png", "", "file is empty (0 bytes)"},
      {"text.jpg", "hello, this is text", "not a readable image"},
      {"cut.png", png_header + std::string(100, '\0'), "truncated PNG (no IEND chunk)"},
      {"cut.jpg", std::string("\xFF\xD8\xFF\xE0", 4) + std::string(200, 'x'), "truncated JPEG"},
      {"cut.webp", "RIFF" + little_endian(50, 4) + "WEBPVP8 " + std::string(13, '\0'),
       "truncated WebP (RIFF chunk of 58 bytes, file of 29)"},
      {"huge.png", png_claiming(100000, 100000),
       "100000x100000 pixels is more than densert decodes (128 megapixels)"},
      {"flat.png", png_claiming(0, 5), "header gives 0x5 pixels"},
      {"huge.tiff", tiff_claiming(100000),
       "cannot be decoded: image is larger than OpenCV decodes"},
  };
  for (const BadFile& c : cases) {
    const std::string path = write_file(c.name, c.bytes);
    Expected<Tensor> image = load_image(path, Preprocessing::imagenet());
    ASSERT_FALSE(image.ok()) << c.name;
    EXPECT_EQ(image.status().kind(), ErrorKind::kBadArgument) << c.name;
    EXPECT_NE(image.status().message().find(path + ": " + c.message), std::string::npos)
        << image.status().message();
    EXPECT_EQ(image.status().message().find('\n'), std::string::npos);
  }
  Expected<Tensor> missing = load_image("/nonexistent/x.png", Preprocessing::imagenet());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), "/nonexistent/x.png: cannot be opened");

  testing::TempDir dir;
  Expected<Tensor> folder = load_image(dir.path(), Preprocessing::imagenet());
  ASSERT_FALSE(folder.ok());
  EXPECT_EQ(folder.status().kind(), ErrorKind::kBadArgument);
  EXPECT_EQ(folder.status().message(), dir.path() + ": is a folder, not a file");
}

// A very thin image grows along its long side when its short side is resized.
TEST(LoadImage, ResizeBeyondThePixelLimitIsRefused) {
  Expected<Preprocessing> p = parse_preprocessing(
      R"({"resize":"shorter_side_center_crop","resize_to":1000,"color":"gray","size":[28,28]})",
      {kBatchDim, 1, 28, 28});
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  const std::vector<unsigned char> pixels(1000, 128);
  Expected<Tensor> t = preprocess_pixels(pixels.data(), 1000, 1, 1, *p);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().kind(), ErrorKind::kBadArgument);
  EXPECT_EQ(t.status().message(),
            "pixels: resizing its 1x1000 pixels gives 1000x1000000, more than densert handles (128 "
            "megapixels)");
}

TEST(Preprocessing, ParsesMetadataJson) {
  Expected<Preprocessing> p = parse_preprocessing(
      R"({"resize":"direct","size":[28,28],"color":"gray","scale":0.5,"mean":[0.25],"std":[2],"layout":"NCHW"})",
      {kBatchDim, 1, 28, 28});
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ(p->color, Preprocessing::Color::kGray);
  EXPECT_EQ(p->height, 28);
  const unsigned char pixels[4] = {0, 2, 4, 6};
  Expected<Tensor> t = preprocess_pixels(pixels, 2, 2, 1, *p);
  ASSERT_TRUE(t.ok());
  // (v * 0.5 - 0.25) / 2 after a bilinear resize of 2x2 to 28x28 keeps the corners' values.
  EXPECT_FLOAT_EQ(t->data[0], (0 * 0.5f - 0.25f) / 2.0f);
  EXPECT_FLOAT_EQ(t->data[28 * 28 - 1], (6 * 0.5f - 0.25f) / 2.0f);

  Expected<Preprocessing> bad = parse_preprocessing(R"({"color":"cmyk"})", {kBatchDim, 3, 8, 8});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "preprocessing color \"cmyk\" is not rgb, bgr or gray");
  EXPECT_FALSE(parse_preprocessing("not json", {}).ok());

  // The shorter side goes to 256 unless resize_to says otherwise.
  Expected<Preprocessing> crop =
      parse_preprocessing(R"({"resize":"shorter_side_center_crop"})", {kBatchDim, 3, 224, 224});
  ASSERT_TRUE(crop.ok()) << crop.status().to_string();
  EXPECT_EQ(crop->resize_to, 256);
  crop = parse_preprocessing(R"({"resize":"shorter_side_center_crop","resize_to":232})",
                             {kBatchDim, 3, 224, 224});
  ASSERT_TRUE(crop.ok()) << crop.status().to_string();
  EXPECT_EQ(crop->resize_to, 232);
}

struct BadPreprocessing {
  const char* json;
  Dims input_dims;
  const char* message;
};

TEST(Preprocessing, RefusesFieldsThatCannotWork) {
  const Dims gray28 = {kBatchDim, 1, 28, 28};
  const Dims unsized = {kBatchDim, 3, 0, 0};
  const BadPreprocessing cases[] = {
      {R"({"color":"gray","resize":"shorter_side_center_crop","size":[28,28],"resize_to":0})",
       gray28, "preprocessing resize_to 0 is smaller than the crop size [28,28]"},
      {R"({"color":"gray","resize":"shorter_side_center_crop","size":[28,28],"resize_to":-1})",
       gray28, "preprocessing resize_to -1 is smaller than the crop size [28,28]"},
      {R"({"resize":"shorter_side_center_crop","size":[224,224],"resize_to":100000})", unsized,
       "preprocessing resize_to 100000 is larger than 8192"},
      {R"({"color":"gray","size":[100000,100000]})", gray28,
       "preprocessing size [100000,100000] does not match the model input [28,28]"},
      {R"({"size":[100000,100000]})", unsized,
       "preprocessing size [100000,100000] is larger than 8192 pixels a side"},
      {R"({"color":"rgb"})", unsized,
       "preprocessing needs \"size\": the model input [N,3,0,0] has no fixed height and width"},
      {R"({"size":[0,28]})", gray28,
       "preprocessing size must be [height, width], two positive whole numbers"},
      {R"({"color":"gray","szie":[28,28]})", gray28,
       "preprocessing has an unknown key \"szie\" (known: resize, resize_to, size, color, scale, "
       "mean, std, layout)"},
      {R"({"resize":"direct","resize_to":256})", gray28,
       "preprocessing resize_to needs \"resize\": \"shorter_side_center_crop\""},
      {R"({"color":"rgb","size":[8,8],"mean":[0.5,0.5]})", unsized,
       "preprocessing mean has 2 values, expected 1 or 3 (one per channel)"},
      {R"({"color":"gray","std":[1,1,1]})", gray28, "preprocessing std has 3 values, expected 1"},
      {R"({"color":"gray","mean":1e39})", gray28, "preprocessing mean must hold finite numbers"},
      {R"({"color":"gray","std":1e-40})", gray28,
       "preprocessing std must hold finite numbers of at least 1e-38"},
      {R"({"color":"gray","scale":1e39})", gray28,
       "preprocessing scale must be a finite number other than 0"},
      {R"({"color":"gray","size":[28.5,28]})", gray28,
       "preprocessing size must be [height, width], two positive whole numbers"},
      {R"({"color":"gray","size":"28"})", gray28,
       "preprocessing size must be [height, width], two positive whole numbers"},
      {R"({"resize":"shorter_side_center_crop","resize_to":1e20,"color":"gray"})", gray28,
       "preprocessing \"resize_to\" must be a whole number"},
      {R"({"color":7})", gray28, "preprocessing \"color\" must be a string"},
      {R"({"color":"gray","layout":"NHWC"})", gray28,
       "preprocessing layout \"NHWC\": densert feeds NCHW"},
  };
  for (const BadPreprocessing& c : cases) {
    Expected<Preprocessing> p = parse_preprocessing(c.json, c.input_dims);
    ASSERT_FALSE(p.ok()) << c.json;
    EXPECT_EQ(p.status().kind(), ErrorKind::kBadArgument) << c.json;
    EXPECT_EQ(p.status().message(), c.message);
  }
}

TEST(Preprocessing, BadMetadataIsAnInvalidModel) {
  Expected<Preprocessing> p =
      preprocessing_from_metadata({{kPreprocessKey, R"({"size":[0,0]})"}}, {kBatchDim, 1, 28, 28});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().kind(), ErrorKind::kInvalidModel);
  EXPECT_EQ(p.status().message(),
            "model metadata densert.preprocess: preprocessing size must be [height, width], two "
            "positive whole numbers");
}

TEST(Labels, CountMustMatchTheModelsClasses) {
  testing::TempDir dir;
  const std::string three = dir.file("three.txt"), empty = dir.file("empty.txt");
  ASSERT_TRUE(testing::write_file(three, "a\nb\r\nc\n\n"));
  ASSERT_TRUE(testing::write_file(empty, ""));

  Expected<std::vector<std::string>> labels = read_labels(three, 3);
  ASSERT_TRUE(labels.ok()) << labels.status().to_string();
  EXPECT_EQ(*labels, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(read_labels(three, 0).ok());  // a model whose class count is unknown

  const std::pair<std::string, std::string> refused[] = {
      {three, "labels file " + three + " has 3 names, the model has 10 classes"},
      {empty, "labels file " + empty + " has 0 names, the model has 10 classes"},
      {dir.path(), "labels file " + dir.path() + ": is a folder, not a file"},
      {dir.file("missing.txt"), "labels file " + dir.file("missing.txt") + ": cannot be opened"},
  };
  for (const auto& [path, message] : refused) {
    labels = read_labels(path, 10);
    ASSERT_FALSE(labels.ok()) << path;
    EXPECT_EQ(labels.status().kind(), ErrorKind::kBadArgument);
    EXPECT_EQ(labels.status().message(), message);
  }

  labels = labels_from_metadata({{kLabelsKey, R"(["a","b"])"}}, 10);
  ASSERT_FALSE(labels.ok());
  EXPECT_EQ(labels.status().kind(), ErrorKind::kInvalidModel);
  EXPECT_EQ(labels.status().message(),
            "model metadata densert.labels has 2 names, the model has 10 classes");
  EXPECT_TRUE(labels_from_metadata({}, 10).ok());  // no labels: classes print as "class N"
}

TEST(Idx, HeaderClaimingMoreThanTheFileIsRefusedBeforeAllocating) {
  testing::TempDir dir;
  const std::string path = dir.file("huge.idx");
  std::string bytes = std::string("\0\0\x08\x03", 4) + big_endian32(0xFFFFFFFF) +
                      big_endian32(65535) + big_endian32(65535) + std::string(100, '\0');
  ASSERT_TRUE(testing::write_file(path, bytes));
  Expected<IdxArray> idx = read_idx(path, 3);
  ASSERT_FALSE(idx.ok());
  EXPECT_EQ(idx.status().kind(), ErrorKind::kBadArgument);
  EXPECT_EQ(idx.status().message(),
            path + ": IDX header claims 4294967295 x 65535 x 65535 values, the file holds 100");

  bytes = std::string("\0\0\x08\x03", 4) + big_endian32(2) + big_endian32(2) + big_endian32(2) +
          std::string(8, '\x07');
  ASSERT_TRUE(testing::write_file(path, bytes));
  idx = read_idx(path, 3);
  ASSERT_TRUE(idx.ok()) << idx.status().to_string();
  EXPECT_EQ(idx->values.size(), 8u);
}

}  // namespace
}  // namespace densert
