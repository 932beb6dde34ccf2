// The .npy codec: round trips through write_npy/read_npy, files in other element types and
// header versions laid out byte by byte as NumPy writes them, and malformed files.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "runtime/npy.h"
#include "tests/support/temp_dir.h"

namespace densert {
namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

// A .npy file: magic, version, header length, the header dict padded with spaces and ended
// by a newline so the data starts on a 64-byte boundary, then the data bytes.
std::string npy_file(const std::string& dict, const std::string& data, int version = 1) {
  const size_t preamble = version == 1 ? 10 : 12;
  std::string header = dict;
  header.append((64 - (preamble + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::string bytes = "\x93NUMPY";
  bytes += static_cast<char>(version);
  bytes += '\0';
  const size_t length_bytes = version == 1 ? 2 : 4;
  for (size_t i = 0; i < length_bytes; ++i)
    bytes += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return bytes + header + data;
}

std::string raw(std::initializer_list<unsigned char> values) {
  return std::string(values.begin(), values.end());
}

// ---- Round trips ----

struct RoundTripCase {
  std::string name;
  Tensor tensor;
  std::string shape_text;  // as NumPy writes it in the header
};

TEST(Npy, RoundTripKeepsShapeAndBits) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<RoundTripCase> cases = {
      {"1d", Tensor({5}, {1.5f, -2.0f, 0.0f, 1e-40f, 3.4e38f}), "(5,)"},
      {"4d", Tensor({2, 3, 1, 2}, {1, 2, 3, 4, 5, 6, -1, -2, -3, -4, -5, -6}), "(2, 3, 1, 2)"},
      {"scalar", Tensor({}, {42.25f}), "()"},
      {"special_values",
       Tensor({2, 2}, {-0.0f, inf, -inf, std::numeric_limits<float>::quiet_NaN()}), "(2, 2)"},
      {"empty", Tensor({0, 3}, {}), "(0, 3)"},
  };
  testing::TempDir dir;
  for (const RoundTripCase& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = dir.file(c.name + ".npy");
    ASSERT_TRUE(write_npy(path, c.tensor).ok());

    // The header is what numpy.save writes, so NumPy reads the file back.
    const std::string bytes = read_bytes(path);
    ASSERT_GE(bytes.size(), 10u);
    EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
    const size_t header_len =
        static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    EXPECT_EQ((10 + header_len) % 64, 0u);
    EXPECT_EQ(bytes.size(), 10 + header_len + c.tensor.data.size() * sizeof(float));
    const std::string header = bytes.substr(10, header_len);
    EXPECT_EQ(header.back(), '\n');
    EXPECT_EQ(header.substr(0, header.find_last_not_of(" \n") + 1),
              "{'descr': '<f4', 'fortran_order': False, 'shape': " + c.shape_text + ", }");

    Expected<Tensor> back = read_npy(path);
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    EXPECT_EQ(back->dims, c.tensor.dims);
    ASSERT_EQ(back->data.size(), c.tensor.data.size());
    // Bitwise, so that -0, NaN and denormals count too.
    if (!c.tensor.data.empty()) {
      EXPECT_EQ(std::memcmp(back->data.data(), c.tensor.data.data(),
                            c.tensor.data.size() * sizeof(float)),
                0);
    }
  }
}

// ---- Files written the way NumPy writes them ----

struct ReadCase {
  std::string name;
  std::string file;
  Dims dims;
  std::vector<float> values;
};

TEST(Npy, ReadsOtherElementTypesAndHeaders) {
  const std::vector<ReadCase> cases = {
      // 1.5, -2.0, 0.25 and 0.1 as little-endian IEEE doubles; 0.1 rounds to the nearest float.
      {"float64",
       npy_file(
           "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }",
           raw({0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0,    0,    0,    0,    0,    0,    0,    0xc0,
                0, 0, 0, 0, 0, 0, 0xd0, 0x3f, 0x9a, 0x99, 0x99, 0x99, 0x99, 0x99, 0xb9, 0x3f})),
       {2, 2},
       {1.5f, -2.0f, 0.25f, static_cast<float>(0.1)}},
      // 7, -1, 2^33 and 0 as little-endian int64.
      {"int64",
       npy_file("{'descr': '<i8', 'fortran_order': False, 'shape': (4,), }",
                raw({7, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                     0, 0, 0, 0, 2, 0, 0, 0, 0,    0,    0,    0,    0,    0,    0,    0})),
       {4},
       {7.0f, -1.0f, 8589934592.0f, 0.0f}},
      {"int32",
       npy_file("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }",
                raw({0xfe, 0xff, 0xff, 0xff, 0x10, 0, 0, 0})),
       {2},
       {-2.0f, 16.0f}},
      {"uint8_image",
       npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 3), }", raw({0, 128, 255})),
       {1, 3},
       {0.0f, 128.0f, 255.0f}},
      {"bool",
       npy_file("{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", raw({1, 0})),
       {2},
       {1.0f, 0.0f}},
      // Version 2 has a 4-byte header length.
      {"version2_float32",
       npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
                raw({0, 0, 0xc0, 0x3f}), 2),
       {1},
       {1.5f}},
      // Another writer's spacing and key order.
      {"compact_header",
       npy_file("{'shape':(3,),'fortran_order':False,'descr':'<f4'}",
                raw({0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0, 0, 0x40, 0x40})),
       {3},
       {1.0f, 2.0f, 3.0f}},
      {"one_dim_without_comma",
       npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1), }",
                raw({0, 0, 0x80, 0xbf})),
       {1},
       {-1.0f}},
  };
  testing::TempDir dir;
  for (const ReadCase& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = dir.file(c.name + ".npy");
    ASSERT_TRUE(testing::write_file(path, c.file));
    Expected<Tensor> tensor = read_npy(path);
    ASSERT_TRUE(tensor.ok()) << tensor.status().to_string();
    EXPECT_EQ(tensor->dims, c.dims);
    EXPECT_EQ(tensor->data, c.values);
  }
}

// ---- Malformed files ----

struct ErrorCase {
  std::string name;
  std::string file;
  std::string message;  // after "<path>: "
};

TEST(Npy, MalformedFilesAreBadArguments) {
  const std::string f4_2x2 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
  const std::string valid = npy_file(f4_2x2, std::string(16, '\0'));
  const std::vector<ErrorCase> cases = {
      {"text_file", "x,y\n1,2\n", "not a .npy file"},
      {"png", std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16), "not a .npy file"},
      {"magic_only", "\x93NUMPY", "not a .npy file"},
      {"empty", "", "not a .npy file"},
      {"truncated_data", valid.substr(0, valid.size() - 8),
       "holds 8 data bytes, shape [2,2] needs 16"},
      {"truncated_header", valid.substr(0, 40), "truncated .npy header"},
      {"truncated_version2_preamble", std::string("\x93NUMPY\x02\x00\x10\x00", 10),
       "truncated .npy header"},
      {"fortran_order",
       npy_file("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
                std::string(16, '\0')),
       "Fortran-ordered arrays are not supported"},
      {"big_endian",
       npy_file("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", std::string(8, '\0')),
       "element type >f4 is not supported"},
      {"complex",
       npy_file("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", std::string(16, '\0')),
       "element type <c8 is not supported"},
      {"version4", std::string("\x93NUMPY\x04\x00\x00\x00\x00\x00", 12),
       ".npy version 4 is not supported"},
      {"no_shape", npy_file("{'descr': '<f4', 'fortran_order': False, }", ""),
       "header has no shape"},
      {"negative_dim", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1), }", ""),
       "negative dim in shape (2, -1)"},
      {"malformed_dim", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", ""),
       "malformed shape (2, x)"},
      {"trailing_letters",
       npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3a), }", ""),
       "malformed shape (2, 3a)"},
      {"no_commas", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2 3), }", ""),
       "malformed shape (2 3)"},
      {"unclosed_shape",
       npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, }\n", ""),
       "malformed shape (2, 3, }"},
      {"no_descr", npy_file("{'fortran_order': False, 'shape': (2,), }", ""),
       "header has no descr (element type)"},
      {"dim_out_of_range",
       npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", ""),
       "malformed shape (99999999999999999999,)"},
      {"too_large",
       npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1048576, 1048576, 2), }", ""),
       "shape (1048576, 1048576, 2) is too large"},
  };
  testing::TempDir dir;
  for (const ErrorCase& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = dir.file(c.name + ".npy");
    ASSERT_TRUE(testing::write_file(path, c.file));
    Expected<Tensor> tensor = read_npy(path);
    ASSERT_FALSE(tensor.ok());
    EXPECT_EQ(tensor.status().kind(), ErrorKind::kBadArgument);
    EXPECT_EQ(tensor.status().message(), path + ": " + c.message);
  }
}

TEST(Npy, MissingFile) {
  testing::TempDir dir;
  const std::string path = dir.file("absent.npy");
  Expected<Tensor> tensor = read_npy(path);
  ASSERT_FALSE(tensor.ok());
  EXPECT_EQ(tensor.status().kind(), ErrorKind::kBadArgument);
  EXPECT_EQ(tensor.status().message(), path + ": cannot open .npy file");
}

TEST(Npy, FolderIsNotAFile) {
  testing::TempDir dir;
  Expected<Tensor> tensor = read_npy(dir.path());
  ASSERT_FALSE(tensor.ok());
  EXPECT_EQ(tensor.status().kind(), ErrorKind::kBadArgument);
  EXPECT_EQ(tensor.status().message(), dir.path() + ": is a folder, not a .npy file");
}

TEST(Npy, WriteIntoMissingFolder) {
  testing::TempDir dir;
  const std::string path = dir.file("no/such/folder/out.npy");
  const Status status = write_npy(path, Tensor({1}, {1.0f}));
  EXPECT_EQ(status.kind(), ErrorKind::kBadArgument);
  EXPECT_EQ(status.message(), path + ": cannot create output file");
}

}  // namespace
}  // namespace densert
