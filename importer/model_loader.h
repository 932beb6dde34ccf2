// The ONNX-library half of importing: parse the protobuf, inline external data, run the
// checker, convert to the canonical opset and run ONNX shape inference.
#pragma once

#include <onnx/onnx_pb.h>

#include <istream>
#include <string>

#include "runtime/status.h"

namespace densert {

struct LoadedModel {
  onnx::ModelProto proto;
  int64_t original_opset = 0;
};

// Parses the protobuf and checks the opset range.
Expected<LoadedModel> parse_onnx_model(const void* data, size_t size);
// The same from a stream, read in pieces, so a file is never held whole next to the model.
Expected<LoadedModel> parse_onnx_model(std::istream& stream);
// Inlines external data (found in external_data_dir), runs the checker, converts to the
// canonical opset and runs shape inference.
Status prepare_onnx_model(LoadedModel& loaded, const std::string& external_data_dir);

}  // namespace densert
