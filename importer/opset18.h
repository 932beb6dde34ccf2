// Opset 18, which Debian's ONNX library (1.12) predates: densert rewrites the few ops whose
// opset-18 form differs from opset 17 and that DenseNets use, then reads the model as
// opset 17.
#pragma once

#include <onnx/onnx_pb.h>

#include "runtime/status.h"

namespace densert {

// Rewrites an opset-18 model in place into its opset-17 form: reductions take their axes
// as an attribute again, and Pad loses its (absent or full) axes input. Ops that changed
// in opset 18 in other ways are refused.
Status downgrade_opset_18(onnx::ModelProto& model);

}  // namespace densert
