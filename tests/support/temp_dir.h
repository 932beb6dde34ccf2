// A scratch directory for tests that write files (.npy tensors, models with external
// data); it is created empty and removed with everything in it when the test ends.
#pragma once

#include <string>

namespace densert::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path()/name, for a file inside the directory.
  std::string file(const std::string& name) const;

 private:
  std::string path_;
};

// Writes bytes to path verbatim; returns false if the file cannot be written.
bool write_file(const std::string& path, const std::string& bytes);

}  // namespace densert::testing
