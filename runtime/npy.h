// Reading and writing NumPy .npy files (version 1 and 2, little-endian float32/float64/int
// arrays in C order), the format used to exchange tensors with PyTorch and ONNX Runtime.
#pragma once

#include <string>

#include "runtime/ir.h"

namespace densert {

// Reads an array as float32; float64 and integer arrays are converted.
Expected<Tensor> read_npy(const std::string& path);
Status write_npy(const std::string& path, const Tensor& tensor);

}  // namespace densert
