// The built-in model's bytes are linked into the binary by builtin_model.S.
#include "cli/model_source.h"

#include "importer/onnx_importer.h"

#ifdef DENSERT_HAS_BUILTIN_MODEL
extern "C" const unsigned char densert_builtin_model_start[];
extern "C" const unsigned char densert_builtin_model_end[];
#endif

namespace densert::cli {

bool has_builtin_model() {
#ifdef DENSERT_HAS_BUILTIN_MODEL
  return true;
#else
  return false;
#endif
}

Expected<Graph> load_model(const std::string& path) {
  if (!path.empty()) return import_onnx_file(path);
#ifdef DENSERT_HAS_BUILTIN_MODEL
  Expected<Graph> graph = import_onnx_buffer(
      densert_builtin_model_start,
      static_cast<size_t>(densert_builtin_model_end - densert_builtin_model_start));
  if (!graph.ok()) return graph.status().with_context("built-in model");
  return graph;
#else
  return Status::bad_argument("this densert was built without the built-in model; pass --model");
#endif
}

}  // namespace densert::cli
