// The ONNX-library half of importing: parse the protobuf, inline external data, run the
// checker, convert to the canonical opset and run ONNX shape inference.
#pragma once

#include <onnx/onnx_pb.h>

#include <string>

#include "runtime/status.h"

namespace densert {

struct LoadedModel {
  onnx::ModelProto proto;
  int64_t original_opset = 0;
};

Expected<LoadedModel> load_onnx_model(const void* data, size_t size,
                                      const std::string& external_data_dir);

}  // namespace densert
