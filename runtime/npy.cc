// A small .npy codec: the header is a Python dict literal with descr, fortran_order and shape.
#include "runtime/npy.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

#include "runtime/host.h"

namespace densert {
namespace {

std::string header_field(const std::string& header, const std::string& key) {
  const size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) return "";
  const size_t colon = header.find(':', at);
  if (colon == std::string::npos) return "";
  size_t start = header.find_first_not_of(' ', colon + 1);
  if (start == std::string::npos) return "";
  if (header[start] == '(') return header.substr(start, header.find(')', start) - start + 1);
  if (header[start] == '\'')
    return header.substr(start + 1, header.find('\'', start + 1) - start - 1);
  return header.substr(start, header.find_first_of(",}", start) - start);
}

template <typename T>
void convert(const char* bytes, Tensor& tensor) {
  for (size_t i = 0; i < tensor.data.size(); ++i) {
    T value;
    std::memcpy(&value, bytes + i * sizeof(T), sizeof(T));
    tensor.data[i] = static_cast<float>(value);
  }
}

}  // namespace

Expected<Tensor> read_npy(const std::string& path) {
  DENSERT_RETURN_IF_ERROR(check_regular_file(path, "a .npy file"));
  std::ifstream file(path, std::ios::binary);
  if (!file) return Status::bad_argument(path + ": cannot open .npy file");
  const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const auto bad = [&](const std::string& what) {
    return Status::bad_argument(path + ": " + what);
  };
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) return bad("not a .npy file");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0;
  size_t offset = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return bad("truncated .npy header");
    for (int i = 0; i < 4; ++i)
      header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    offset = 12;
  } else {
    return bad(".npy version " + std::to_string(major) + " is not supported");
  }
  if (offset + header_len > bytes.size()) return bad("truncated .npy header");
  const std::string header = bytes.substr(offset, header_len);
  offset += header_len;

  if (header_field(header, "fortran_order") == "True")
    return bad("Fortran-ordered arrays are not supported");
  const std::string descr = header_field(header, "descr");
  if (descr.empty()) return bad("header has no descr (element type)");
  const std::string shape_text = header_field(header, "shape");
  if (shape_text.empty() || shape_text.front() != '(' || shape_text.back() != ')') {
    std::string shown = shape_text.substr(0, 40);
    std::replace_if(
        shown.begin(), shown.end(), [](unsigned char c) { return c < 0x20 || c >= 0x7f; }, ' ');
    shown.erase(shown.find_last_not_of(' ') + 1);
    return bad(shape_text.empty() ? "header has no shape" : "malformed shape " + shown);
  }
  // "(2, 3, 32, 32)", "(5,)" or "()": whole numbers separated by commas.
  Dims dims;
  const std::string inside = shape_text.substr(1, shape_text.size() - 2);
  size_t pos = 0;
  while (pos < inside.size()) {
    const size_t next = std::min(inside.find(',', pos), inside.size());
    const size_t first = inside.find_first_not_of(' ', pos);
    const size_t last = inside.find_last_not_of(' ', next - 1);
    const bool blank = first == std::string::npos || first >= next;
    // Only the last item may be blank: the trailing comma of "(5,)".
    if (blank && next < inside.size()) return bad("malformed shape " + shape_text);
    if (!blank) {
      int64_t d = 0;
      const auto [stop, error] =
          std::from_chars(inside.data() + first, inside.data() + last + 1, d);
      if (error != std::errc() || stop != inside.data() + last + 1)
        return bad("malformed shape " + shape_text);
      if (d < 0) return bad("negative dim in shape " + shape_text);
      dims.push_back(d);
    }
    pos = next + 1;
  }
  int64_t count = 1;
  for (int64_t d : dims) {
    if (d != 0 && count > (int64_t{1} << 40) / d)
      return bad("shape " + shape_text + " is too large");
    count *= d;
  }
  size_t element_size = 0;
  if (descr == "<f4" || descr == "<i4" || descr == "<u4") element_size = 4;
  if (descr == "<f8" || descr == "<i8" || descr == "<u8") element_size = 8;
  if (descr == "|u1" || descr == "|i1" || descr == "|b1") element_size = 1;
  if (element_size == 0) return bad("element type " + descr + " is not supported");
  if (bytes.size() - offset < static_cast<size_t>(count) * element_size) {
    return bad("holds " + std::to_string(bytes.size() - offset) + " data bytes, shape " +
               dims_to_string(dims) + " needs " +
               std::to_string(count * static_cast<int64_t>(element_size)));
  }
  Tensor tensor(dims);
  const char* data = bytes.data() + offset;
  if (descr == "<f4") convert<float>(data, tensor);
  if (descr == "<f8") convert<double>(data, tensor);
  if (descr == "<i4") convert<int32_t>(data, tensor);
  if (descr == "<u4") convert<uint32_t>(data, tensor);
  if (descr == "<i8") convert<int64_t>(data, tensor);
  if (descr == "<u8") convert<uint64_t>(data, tensor);
  if (descr == "|u1" || descr == "|b1") convert<uint8_t>(data, tensor);
  if (descr == "|i1") convert<int8_t>(data, tensor);
  return tensor;
}

Status write_npy(const std::string& path, const Tensor& tensor) {
  std::string shape = "(";
  for (size_t i = 0; i < tensor.dims.size(); ++i)
    shape += std::to_string(tensor.dims[i]) + ", ";
  if (tensor.dims.size() > 1) shape.resize(shape.size() - 2);
  if (tensor.dims.size() == 1) shape.resize(shape.size() - 1);
  shape += ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad so that the data starts on a 64-byte boundary, ending the header with a newline.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream file(path, std::ios::binary);
  if (!file) return Status::bad_argument(path + ": cannot create output file");
  const uint16_t header_len = static_cast<uint16_t>(header.size());
  file.write("\x93NUMPY\x01\x00", 8);
  const char len_bytes[2] = {static_cast<char>(header_len & 0xff),
                             static_cast<char>(header_len >> 8)};
  file.write(len_bytes, 2);
  file << header;
  file.write(reinterpret_cast<const char*>(tensor.data.data()),
             static_cast<std::streamsize>(tensor.data.size() * sizeof(float)));
  if (!file) return Status::bad_argument(path + ": write failed");
  return {};
}

}  // namespace densert
