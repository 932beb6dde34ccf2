// What densert asks of the machine it runs on: whether a path names a file it can read whole,
// and how much memory the machine has.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/status.h"

namespace densert {

// Refuses a path that names a folder, a device, a pipe or a socket (`what` says what was
// expected, e.g. "a .npy file"): a folder opens as a file on Linux and fails only when read,
// and /dev/zero or a pipe would be read without end. A path that does not exist passes; the
// caller's open reports it.
Status check_regular_file(const std::string& path, const std::string& what);

// Physical memory of the machine in bytes (0 if unknown). Work that needs more is refused
// before it is allocated rather than left to fail, or to the kernel's OOM killer, midway.
int64_t physical_memory_bytes();

// "1.5 GiB", "300 MiB", "12 KiB", "17 bytes".
std::string bytes_to_string(int64_t bytes);

}  // namespace densert
