// densert's preprocessing presets against torchvision's transforms on real photos, and the
// handling of unreadable image files.
#include "vision/preprocess.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "runtime/npy.h"
#include "tests/support/test_support.h"

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

TEST(LoadImage, BadFilesGiveOneLineErrors) {
  const std::string png_header = "\x89PNG\r\n\x1a\n";
  const BadFile cases[] = {
      {"empty.png", "", "file is empty (0 bytes)"},
      {"text.jpg", "hello, this is text", "not a readable image"},
      {"cut.png", png_header + std::string(100, '\0'), "truncated PNG (no IEND chunk)"},
      {"cut.jpg", std::string("\xFF\xD8\xFF\xE0", 4) + std::string(200, 'x'), "truncated JPEG"},
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
}

}  // namespace
}  // namespace densert
