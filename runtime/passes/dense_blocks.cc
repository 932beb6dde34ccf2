// Pass "dense_blocks": gives each dense block one buffer. Every value concatenated in the
// block gets a channel range of that buffer (its producer writes there directly) and every
// Concat of the block becomes a view of a prefix of it, so concatenation copies nothing.
// Both forms that exporters produce are recognised: each layer concatenating the list of
// all earlier outputs (torchvision), and the chained x = concat(x, new) (Keras, Caffe2).
#include <map>
#include <set>

#include "runtime/log.h"
#include "runtime/passes/pass.h"

namespace densert {
namespace {

bool is_channel_concat(const Graph& graph, const Node& node) {
  return node.op == OpType::kConcat && node.attrs_as<AxisAttrs>().axis == 1 &&
         graph.value(node.outputs[0]).dims.size() == 4;
}

// Ops whose output the engine can write straight into a channel range of a buffer.
bool writes_into_slices(OpType op) {
  switch (op) {
    case OpType::kConv:
    case OpType::kBatchNorm:
    case OpType::kMaxPool:
    case OpType::kAveragePool:
    case OpType::kRelu:
    case OpType::kClip:
      return true;
    default:
      return false;
  }
}

// The values a concat joins, with nested channel concats expanded in place.
std::vector<ValueId> leaves_of(const Graph& graph, const Node& concat) {
  std::vector<ValueId> leaves;
  for (ValueId in : concat.inputs) {
    const Node* producer = producer_of(graph, in);
    if (producer && is_channel_concat(graph, *producer)) {
      const auto inner = leaves_of(graph, *producer);
      leaves.insert(leaves.end(), inner.begin(), inner.end());
    } else {
      leaves.push_back(in);
    }
  }
  return leaves;
}

// Why a leaf cannot live in a block buffer, or empty if it can.
std::string refusal(const Graph& graph, ValueId leaf, const std::set<ValueId>& seen) {
  const Value& value = graph.value(leaf);
  if (value.is_constant()) return "input \"" + value.name + "\" is a constant";
  if (seen.count(leaf)) return "input \"" + value.name + "\" is used twice";
  if (value.slot.block >= 0) {
    return "input \"" + value.name + "\" already lives in " + graph.blocks[value.slot.block].name;
  }
  const Node* producer = producer_of(graph, leaf);
  if (!producer) return "input \"" + value.name + "\" is a graph input";
  if (!writes_into_slices(producer->op)) {
    return "input \"" + value.name + "\" comes from " + producer->describe() +
           ", which cannot write into a buffer slice";
  }
  return "";
}

}  // namespace

Expected<PassResult> run_dense_blocks(Graph& graph) {
  PassResult result;
  // Concats grouped by the first value they join: one group per candidate block.
  std::map<ValueId, std::vector<NodeId>> groups;
  std::map<NodeId, std::vector<ValueId>> leaves;
  for (size_t n = 0; n < graph.nodes.size(); ++n) {
    const Node& node = graph.nodes[n];
    if (!is_channel_concat(graph, node)) continue;
    leaves[n] = leaves_of(graph, node);
    groups[leaves[n].front()].push_back(static_cast<NodeId>(n));
  }

  for (const auto& [first, members] : groups) {
    // The longest concat holds the block; every other must be a prefix of it.
    NodeId longest = members.front();
    for (NodeId n : members) {
      if (leaves[n].size() > leaves[longest].size()) longest = n;
    }
    const std::vector<ValueId>& segments = leaves[longest];
    std::string reason;
    for (NodeId n : members) {
      const auto& own = leaves[n];
      if (!std::equal(own.begin(), own.end(), segments.begin())) {
        reason = graph.nodes[n].describe() + " and " + graph.nodes[longest].describe() +
                 " join values that are not prefixes of one another";
        break;
      }
    }
    std::set<ValueId> seen;
    for (size_t i = 0; reason.empty() && i < segments.size(); ++i) {
      reason = refusal(graph, segments[i], seen);
      seen.insert(segments[i]);
    }
    if (!reason.empty()) {
      graph.refused_blocks.push_back(reason);
      for (NodeId n : members) {
        DENSERT_LOG(kDispatch) << "dense_blocks: refused " << graph.nodes[n].describe()
                               << ", it copies: " << reason;
      }
      continue;
    }

    DenseBlock block;
    block.name = "block" + std::to_string(graph.blocks.size());
    const int32_t block_index = static_cast<int32_t>(graph.blocks.size());
    for (ValueId segment : segments) {
      graph.value(segment).slot = {block_index, block.channels};
      block.segments.push_back(segment);
      block.channels += graph.value(segment).dims[1];
    }
    for (NodeId n : members) {
      const ValueId view = graph.nodes[n].outputs[0];
      graph.value(view).slot = {block_index, 0};
      block.views.push_back(view);
      DENSERT_LOG(kDispatch) << "dense_blocks: " << graph.nodes[n].describe() << " is a view of "
                             << block.name << " channels [0, " << graph.value(view).dims[1] << ")";
      ++result.rewrites;
    }
    graph.blocks.push_back(std::move(block));
  }
  return result;
}

}  // namespace densert
