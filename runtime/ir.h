// densert's intermediate representation: a graph of typed nodes over float32 values with
// NCHW shapes whose batch dimension may stay symbolic until run time. The importer builds
// it, the optimizer passes rewrite it, and both executors run it.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "runtime/status.h"

namespace densert {

using Dims = std::vector<int64_t>;
using ValueId = int32_t;
using NodeId = int32_t;
constexpr ValueId kNoValue = -1;

// In Value::dims, the batch dimension that is fixed only when a plan is built.
constexpr int64_t kBatchDim = -1;

// The product of the dims; INT64_MAX where it would overflow (more than any memory holds, so
// a size check against memory still refuses it).
int64_t num_elements(const Dims& dims);
std::string dims_to_string(const Dims& dims);  // "[N,3,224,224]"

// Float32 data with its shape; constants are owned once and shared by pointer.
struct Tensor {
  Dims dims;
  std::vector<float> data;

  Tensor() = default;
  explicit Tensor(Dims d) : dims(std::move(d)), data(static_cast<size_t>(num_elements(dims))) {}
  Tensor(Dims d, std::vector<float> values) : dims(std::move(d)), data(std::move(values)) {}
  int64_t numel() const { return num_elements(dims); }
};

enum class OpType {
  kConv,
  kBatchNorm,
  kRelu,
  kClip,
  kConcat,
  kMaxPool,
  kAveragePool,
  kGlobalAveragePool,
  kPad,
  kFlatten,
  kReshape,
  kGemm,
  kMatMul,
  kAdd,
  kSub,
  kMul,
  kDiv,
  kSoftmax,
  kTranspose,
  kSqueeze,
  kUnsqueeze,
  kReduceMean,
  kIdentity,
  kDropout,
};

const char* op_type_name(OpType op);

// An elementwise activation fused into the op that precedes it (a oneDNN post-op).
struct Activation {
  enum class Kind { kNone, kRelu, kClip };
  Kind kind = Kind::kNone;
  float min = 0.0f;  // kClip bounds
  float max = 0.0f;

  static Activation relu() { return {Kind::kRelu, 0.0f, 0.0f}; }
  static Activation clip(float lo, float hi) { return {Kind::kClip, lo, hi}; }
  bool none() const { return kind == Kind::kNone; }
  float apply(float x) const {
    if (kind == Kind::kRelu) return x > 0.0f ? x : 0.0f;
    if (kind == Kind::kClip) return x < min ? min : (x > max ? max : x);
    return x;
  }
};

// Window geometry shared by Conv and the pools. pads are {top, left, bottom, right}.
struct Window {
  std::array<int64_t, 2> kernel{1, 1};
  std::array<int64_t, 2> strides{1, 1};
  std::array<int64_t, 2> dilations{1, 1};
  std::array<int64_t, 4> pads{0, 0, 0, 0};
};

// Inputs: src, weights [OC, IC/group, KH, KW], optional bias [OC].
struct ConvAttrs {
  Window window;
  int64_t group = 1;
  Activation activation;
};

struct PoolAttrs {
  Window window;
  bool ceil_mode = false;
  bool count_include_pad = false;  // AveragePool only
};

// Inference-form batch normalization. Inputs: src, scale, bias, mean, variance (constants).
struct BatchNormAttrs {
  float epsilon = 1e-5f;
  Activation activation;
};

struct ClipAttrs {
  float min = -3.4028235e38f;
  float max = 3.4028235e38f;
};

// Concat, Flatten and Softmax: one axis, already made non-negative.
struct AxisAttrs {
  int64_t axis = 0;
};

// Constant padding; pads are ONNX-ordered: all begins, then all ends.
struct PadAttrs {
  std::vector<int64_t> pads;
  float value = 0.0f;
};

// Reshape with a target folded at import; may hold 0 (copy) and one -1 (infer).
struct ReshapeAttrs {
  Dims shape;
  bool allow_zero = false;
};

// Inputs: A, B, optional C.
struct GemmAttrs {
  float alpha = 1.0f;
  float beta = 1.0f;
  bool trans_a = false;
  bool trans_b = false;
  Activation activation;
};

struct TransposeAttrs {
  std::vector<int64_t> perm;
};

// Squeeze, Unsqueeze and ReduceMean. Axes may be negative until shapes are known.
struct AxesAttrs {
  std::vector<int64_t> axes;
  bool keep_dims = true;
};

using Attributes =
    std::variant<std::monostate, ConvAttrs, PoolAttrs, BatchNormAttrs, ClipAttrs, AxisAttrs,
                 PadAttrs, ReshapeAttrs, GemmAttrs, TransposeAttrs, AxesAttrs>;

// Where the dense-block pass placed a value: a channel range of a block buffer.
struct BlockSlot {
  int32_t block = -1;          // index into Graph::blocks, -1 if the value has its own memory
  int64_t channel_offset = 0;  // first channel of the value inside the block buffer
};

struct Value {
  std::string name;
  Dims dims;                               // kBatchDim where the batch is symbolic
  std::shared_ptr<const Tensor> constant;  // set for weights and folded constants
  NodeId producer = -1;
  BlockSlot slot;

  bool is_constant() const { return constant != nullptr; }
};

struct Node {
  OpType op;
  std::string name;  // kept from the model for messages and profiles
  std::vector<ValueId> inputs;
  std::vector<ValueId> outputs;
  Attributes attrs;

  template <typename T>
  T& attrs_as() {
    return std::get<T>(attrs);
  }
  template <typename T>
  const T& attrs_as() const {
    return std::get<T>(attrs);
  }
  // `node "conv_1" (Conv)`: the prefix of every message about this node.
  std::string describe() const;
};

// One preallocated buffer holding a whole dense block: every layer writes its own channel
// range and every Concat of the block reads a prefix of it.
struct DenseBlock {
  std::string name;
  std::vector<ValueId> segments;  // the values written into the buffer, in channel order
  std::vector<ValueId> views;     // Concat outputs that are prefixes of the buffer
  int64_t channels = 0;           // logical channels of the whole buffer
};

class Graph {
 public:
  std::vector<Value> values;
  std::vector<DenseBlock> blocks;
  std::vector<std::string> refused_blocks;  // why concats were left as copies
  std::vector<Node> nodes;                  // in topological order
  std::vector<ValueId> inputs;
  std::vector<ValueId> outputs;
  std::map<std::string, std::string> metadata;  // the model's metadata_props
  int64_t opset = 0;                            // the opset the model was lowered from

  ValueId add_value(std::string name, Dims dims);
  ValueId add_constant(std::string name, Tensor tensor);
  ValueId add_constant(std::string name, std::shared_ptr<const Tensor> tensor);
  NodeId add_node(OpType op, std::string name, std::vector<ValueId> inputs,
                  std::vector<ValueId> outputs, Attributes attrs = {});

  const Value& value(ValueId id) const { return values.at(static_cast<size_t>(id)); }
  Value& value(ValueId id) { return values.at(static_cast<size_t>(id)); }
  const Tensor& constant(ValueId id) const { return *values.at(static_cast<size_t>(id)).constant; }

  // Drops a constant's data but keeps its dims, for constants whose values now live
  // elsewhere (in a kernel's weight memory) or that nothing reads any more.
  void release_constant_data(ValueId id);
  // Releases the data of every constant that no node and no graph output reads.
  int release_unread_constants();
  // Points every reader of `from` (and the graph outputs) at `to`.
  void replace_uses(ValueId from, ValueId to);
  // Recomputes Value::producer from the node list; passes call it after rewriting.
  void relink();
  // For each value, the nodes that read it (a node appears once per input slot).
  std::vector<std::vector<NodeId>> consumers() const;
  // Removes nodes whose outputs nobody reads and that are not graph outputs.
  int remove_dead_nodes();
  // Checks ids, single producers and topological order.
  Status validate() const;
  // Readable text form used by `densert inspect` and by tests that compare graphs.
  std::string to_text() const;
  // Number of weights held by constants.
  int64_t parameter_count() const;
  // Node count by op type name.
  std::map<std::string, int> op_census() const;
};

}  // namespace densert
