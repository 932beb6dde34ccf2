// IDX: a big-endian header (magic 0x00000800 | rank, then one 32-bit size per dim) and the
// values; zlib reads plain and gzip-compressed files alike.
#include "vision/idx.h"

#include <zlib.h>

#include <algorithm>

#include "runtime/host.h"

namespace densert {

Expected<IdxArray> read_idx(const std::string& path, int rank) {
  DENSERT_RETURN_IF_ERROR(check_regular_file(path, "an IDX file"));
  gzFile file = gzopen(path.c_str(), "rb");
  if (!file) return Status::bad_argument(path + ": cannot open IDX file");
  std::vector<unsigned char> bytes;
  std::vector<unsigned char> chunk(1 << 16);
  int got;
  while ((got = gzread(file, chunk.data(), static_cast<unsigned>(chunk.size()))) > 0) {
    bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + got);
  }
  const bool failed = got < 0;
  gzclose(file);
  if (failed) return Status::bad_argument(path + ": corrupt gzip data");
  if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] != rank) {
    return Status::bad_argument(path + ": not an IDX file of unsigned bytes with " +
                                std::to_string(rank) + " dims");
  }
  IdxArray array;
  size_t offset = 4;
  for (int d = 0; d < rank; ++d) {
    if (bytes.size() < offset + 4) return Status::bad_argument(path + ": truncated IDX header");
    const int64_t size = (int64_t{bytes[offset]} << 24) | (int64_t{bytes[offset + 1]} << 16) |
                         (int64_t{bytes[offset + 2]} << 8) | int64_t{bytes[offset + 3]};
    array.dims.push_back(size);
    offset += 4;
  }
  // The claimed count can exceed 2^64 (three 32-bit sizes), so it is compared dim by dim
  // against what the file holds instead of being multiplied out.
  const int64_t held = static_cast<int64_t>(bytes.size() - offset);
  const bool empty = std::find(array.dims.begin(), array.dims.end(), 0) != array.dims.end();
  int64_t count = empty ? 0 : 1;
  for (int64_t size : array.dims) {
    if (empty) break;
    if (count > held / size) {
      std::string claimed;
      for (int64_t d : array.dims)
        claimed += (claimed.empty() ? "" : " x ") + std::to_string(d);
      return Status::bad_argument(path + ": IDX header claims " + claimed +
                                  " values, the file holds " + std::to_string(held));
    }
    count *= size;
  }
  array.values.assign(bytes.begin() + static_cast<long>(offset),
                      bytes.begin() + static_cast<long>(offset + count));
  return array;
}

}  // namespace densert
