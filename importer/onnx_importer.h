// Reads an ONNX model (file or memory buffer) with ONNX's own library, checks it, brings it
// to densert's canonical opset and lowers it into the IR.
#pragma once

#include <cstddef>
#include <string>

#include "runtime/ir.h"

namespace densert {

// Every model is converted to this opset before lowering, so lowering handles one opset.
// It is the newest opset that Debian's ONNX library (1.12) knows; opset 18 is rewritten to
// it by densert itself (importer/opset18.h).
constexpr int kCanonicalOpset = 17;
constexpr int kOldestOpset = 7;
constexpr int kNewestOpset = 18;

// Reads a model file; external data files are resolved next to it.
Expected<Graph> import_onnx_file(const std::string& path);

// Reads a model held in memory; external data, if any, is resolved in external_data_dir.
Expected<Graph> import_onnx_buffer(const void* data, size_t size,
                                   const std::string& external_data_dir = "");

}  // namespace densert
