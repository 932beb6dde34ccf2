// Reading IDX files (the MNIST family's format for images and labels), gzip-compressed or not.
#pragma once

#include <string>
#include <vector>

#include "runtime/ir.h"

namespace densert {

struct IdxArray {
  Dims dims;
  std::vector<unsigned char> values;
};

// Reads an IDX file of unsigned bytes with `rank` dims.
Expected<IdxArray> read_idx(const std::string& path, int rank);

}  // namespace densert
