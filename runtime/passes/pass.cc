// The pass pipeline: ordering, disabling by name, and the summary log line of each pass.
#include "runtime/passes/pass.h"

#include "runtime/log.h"

namespace densert {

const std::vector<PassInfo>& optimizer_passes() {
  static const std::vector<PassInfo> passes = {
      {"cleanup", run_cleanup},
      {"canonicalize", run_canonicalize},
      {"affine_to_batchnorm", run_affine_to_batchnorm},
      {"fold_batchnorm", run_fold_batchnorm},
      {"transition_reorder", run_transition_reorder},
      {"fuse_activation", run_fuse_activation},
      {"dense_blocks", run_dense_blocks},
  };
  return passes;
}

Expected<std::vector<PassReport>> optimize(Graph& graph, const OptimizeOptions& options) {
  for (const std::string& name : options.disabled) {
    bool known = false;
    for (const PassInfo& pass : optimizer_passes())
      known |= name == pass.name;
    if (!known) return Status::bad_argument("no optimizer pass is named \"" + name + "\"");
  }
  std::vector<PassReport> reports;
  for (const PassInfo& pass : optimizer_passes()) {
    PassReport report{pass.name, false, 0};
    if (!options.disabled.count(pass.name)) {
      DENSERT_ASSIGN_OR_RETURN(PassResult result, pass.run(graph));
      report.ran = true;
      report.rewrites = result.rewrites;
      DENSERT_RETURN_IF_ERROR(
          graph.validate().with_context(std::string("after pass ") + pass.name));
    }
    DENSERT_LOG(kInfo) << "pass " << pass.name << ": "
                       << (report.ran ? std::to_string(report.rewrites) + " rewrites" : "disabled");
    reports.push_back(report);
  }
  // Weights replaced by folded ones are no longer read.
  graph.release_unread_constants();
  return reports;
}

const Node* producer_of(const Graph& graph, ValueId value) {
  const NodeId id = graph.value(value).producer;
  return id < 0 ? nullptr : &graph.nodes[static_cast<size_t>(id)];
}

bool as_per_channel(const Tensor& constant, int64_t channels, std::vector<float>* per_channel) {
  const int64_t count = constant.numel();
  if (count == 1) {
    per_channel->assign(static_cast<size_t>(channels), constant.data[0]);
    return true;
  }
  // Accepted shapes: [C,1,1] and [1,C,1,1]; anything else is not per-channel on axis 1.
  const Dims& d = constant.dims;
  const bool chw = d.size() == 3 && d[0] == channels && d[1] == 1 && d[2] == 1;
  const bool nchw = d.size() == 4 && d[0] == 1 && d[1] == channels && d[2] == 1 && d[3] == 1;
  if (!chw && !nchw) return false;
  per_channel->assign(constant.data.begin(), constant.data.end());
  return true;
}

}  // namespace densert
