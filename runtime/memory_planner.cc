// Greedy placement, largest first, at the lowest free offset: simple, and within a few percent of
// optimal on DenseNets, whose large buffers (the block buffers) are few and long-lived.
#include "runtime/memory_planner.h"

#include <algorithm>
#include <numeric>

namespace densert {

MemoryPlan plan_memory(const std::vector<BufferRequest>& requests, int64_t alignment) {
  MemoryPlan plan;
  plan.offsets.assign(requests.size(), 0);
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return requests[a].bytes > requests[b].bytes; });
  std::vector<size_t> placed;
  for (size_t i : order) {
    const BufferRequest& r = requests[i];
    const int64_t size = (r.bytes + alignment - 1) / alignment * alignment;
    // Byte ranges taken by placed buffers that are alive at the same time, by start.
    std::vector<std::pair<int64_t, int64_t>> taken;
    for (size_t j : placed) {
      const BufferRequest& other = requests[j];
      if (other.last_step < r.first_step || r.last_step < other.first_step) continue;
      const int64_t other_size = (other.bytes + alignment - 1) / alignment * alignment;
      taken.emplace_back(plan.offsets[j], plan.offsets[j] + other_size);
    }
    std::sort(taken.begin(), taken.end());
    int64_t offset = 0;
    for (const auto& [begin, end] : taken) {
      if (offset + size <= begin) break;
      offset = std::max(offset, end);
    }
    plan.offsets[i] = offset;
    plan.arena_bytes = std::max(plan.arena_bytes, offset + size);
    placed.push_back(i);
  }
  return plan;
}

}  // namespace densert
