// Lifetime-based placement of buffers in one arena: buffers whose lifetimes do not overlap
// may share bytes. Used by the engine for every activation outside the dense blocks and for
// the block buffers themselves.
#pragma once

#include <cstdint>
#include <vector>

namespace densert {

struct BufferRequest {
  int64_t bytes = 0;
  int first_step = 0;  // step that writes it first
  int last_step = 0;   // last step that reads it
};

struct MemoryPlan {
  std::vector<int64_t> offsets;  // byte offset of each request, aligned to `alignment`
  int64_t arena_bytes = 0;
};

// Places the largest buffers first, each at the lowest offset that no live buffer overlaps.
MemoryPlan plan_memory(const std::vector<BufferRequest>& requests, int64_t alignment = 64);

}  // namespace densert
