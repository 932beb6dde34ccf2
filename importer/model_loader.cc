// Parsing, validation and opset conversion, all through ONNX's library. Every exception the
// library throws is caught here and turned into a Status.
#include "importer/model_loader.h"

#include <onnx/checker.h>
#include <onnx/shape_inference/implementation.h>
#include <onnx/version_converter/convert.h>

#include <filesystem>
#include <fstream>
#include <limits>

#include "importer/onnx_importer.h"
#include "runtime/log.h"

namespace densert {
namespace {

// First line of a library message: ONNX's messages run over several lines.
std::string first_line(const std::string& text) {
  const size_t end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end);
}

Expected<int64_t> default_domain_opset(const onnx::ModelProto& model) {
  int64_t opset = -1;
  for (const auto& entry : model.opset_import()) {
    if (entry.domain().empty() || entry.domain() == "ai.onnx") opset = entry.version();
  }
  if (opset < 0) return Status::invalid_model("model imports no opset of the default ONNX domain");
  return opset;
}

// Reads one initializer's external data into raw_data, refusing paths outside the folder.
Status inline_external_data(onnx::TensorProto& tensor, const std::string& dir) {
  std::string location;
  int64_t offset = 0;
  int64_t length = -1;
  for (const auto& entry : tensor.external_data()) {
    try {
      if (entry.key() == "location") location = entry.value();
      if (entry.key() == "offset") offset = std::stoll(entry.value());
      if (entry.key() == "length") length = std::stoll(entry.value());
    } catch (const std::exception&) {
      return Status::invalid_model("initializer \"" + tensor.name() + "\": external data " +
                                   entry.key() + " \"" + entry.value() + "\" is not a number");
    }
  }
  const std::string what = "initializer \"" + tensor.name() + "\": external data";
  if (location.empty()) return Status::invalid_model(what + " has no location");
  const std::filesystem::path relative(location);
  if (relative.is_absolute() || location.find("..") != std::string::npos) {
    return Status::invalid_model(what + " location \"" + location +
                                 "\" must be a relative path inside the model's folder");
  }
  if (dir.empty()) {
    return Status::bad_argument(what + " \"" + location +
                                "\" needs the model's folder, but the model came from memory");
  }
  const std::filesystem::path path = std::filesystem::path(dir) / relative;
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file) return Status::invalid_model(what + " file " + path.string() + " cannot be opened");
  const int64_t file_size = static_cast<int64_t>(file.tellg());
  if (length < 0) length = file_size - offset;
  if (offset < 0 || length < 0 || offset > file_size || length > file_size - offset) {
    return Status::invalid_model(what + " range [" + std::to_string(offset) + ", +" +
                                 std::to_string(length) + ") exceeds " + path.string() + " of " +
                                 std::to_string(file_size) + " bytes");
  }
  std::string bytes(static_cast<size_t>(length), '\0');
  file.seekg(offset);
  file.read(bytes.data(), length);
  if (!file) return Status::invalid_model(what + " could not be read from " + path.string());
  tensor.set_raw_data(std::move(bytes));
  tensor.clear_external_data();
  tensor.set_data_location(onnx::TensorProto::DEFAULT);
  return {};
}

}  // namespace

Expected<LoadedModel> load_onnx_model(const void* data, size_t size,
                                      const std::string& external_data_dir) {
  if (data == nullptr || size == 0) return Status::invalid_model("model is empty (0 bytes)");
  if (size > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return Status::unsupported("model of " + std::to_string(size) +
                               " bytes exceeds protobuf's 2 GiB limit; use external data");
  }
  LoadedModel loaded;
  onnx::ModelProto& model = loaded.proto;
  if (!model.ParseFromArray(data, static_cast<int>(size))) {
    return Status::invalid_model("not an ONNX model: the protobuf cannot be parsed (" +
                                 std::to_string(size) + " bytes; truncated or another format?)");
  }
  if (!model.has_graph() || model.graph().node_size() == 0) {
    return Status::invalid_model("not an ONNX model: it has no graph nodes");
  }
  DENSERT_ASSIGN_OR_RETURN(loaded.original_opset, default_domain_opset(model));
  if (loaded.original_opset < kOldestOpset || loaded.original_opset > kCanonicalOpset) {
    return Status::unsupported("opset " + std::to_string(loaded.original_opset) +
                               " is outside the supported range " + std::to_string(kOldestOpset) +
                               " to " + std::to_string(kCanonicalOpset));
  }
  for (auto& tensor : *model.mutable_graph()->mutable_initializer()) {
    if (tensor.data_location() == onnx::TensorProto::EXTERNAL) {
      DENSERT_RETURN_IF_ERROR(inline_external_data(tensor, external_data_dir));
    }
  }

  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    return Status::invalid_model("ONNX checker: " + first_line(e.what()));
  }

  if (loaded.original_opset != kCanonicalOpset) {
    try {
      model = onnx::version_conversion::ConvertVersion(model, kCanonicalOpset);
    } catch (const std::exception& e) {
      return Status::unsupported("cannot convert opset " + std::to_string(loaded.original_opset) +
                                 " to " + std::to_string(kCanonicalOpset) + ": " +
                                 first_line(e.what()));
    }
    DENSERT_LOG(kInfo) << "converted opset " << loaded.original_opset << " to "
                       << kCanonicalOpset;
  }

  try {
    onnx::ShapeInferenceOptions options(/*check_type=*/true, /*strict_mode=*/1,
                                        /*data_prop=*/false);
    onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(), options);
  } catch (const std::exception& e) {
    return Status::invalid_model("ONNX shape inference: " + first_line(e.what()));
  }
  return loaded;
}

}  // namespace densert
