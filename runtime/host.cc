#include "runtime/host.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <system_error>

namespace densert {

Status check_regular_file(const std::string& path, const std::string& what) {
  std::error_code error;
  const std::filesystem::file_status status = std::filesystem::status(path, error);
  if (error && error != std::errc::no_such_file_or_directory)
    return Status::bad_argument(path + ": cannot be read: " + error.message());
  if (std::filesystem::is_directory(status))
    return Status::bad_argument(path + ": is a folder, not " + what);
  if (std::filesystem::exists(status) && !std::filesystem::is_regular_file(status))
    return Status::bad_argument(path + ": is a device, pipe or socket, not " + what);
  return {};
}

int64_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGESIZE);
  return pages > 0 && page_size > 0 ? static_cast<int64_t>(pages) * page_size : 0;
}

std::string bytes_to_string(int64_t bytes) {
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return std::to_string(bytes) + " bytes";
  double value = static_cast<double>(bytes) / 1024;
  int unit = 0;
  while (value >= 1024 && unit < 5) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof(text), value < 10 ? "%.1f %s" : "%.0f %s", value, kUnits[unit]);
  return text;
}

}  // namespace densert
