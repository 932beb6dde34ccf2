// The C API over the engine. Each entry point catches everything, so no exception crosses
// into C, and records its error message for densert_last_error on the calling thread.
#include <densert/densert.h>

#include <cstring>
#include <new>
#include <string>

#include "importer/onnx_importer.h"
#include "runtime/engine/engine.h"
#include "vision/preprocess.h"

struct densert_options {
  int threads = 0;
  densert_precision precision = DENSERT_PRECISION_F32;
  int64_t max_batch = 0;
};

struct densert_model {
  std::shared_ptr<densert::Engine> engine;
  std::vector<std::string> input_names, output_names;
  std::vector<densert::Dims> input_dims, output_dims;
  // Bad label or preprocessing metadata fails only the calls that need it: the model still runs.
  densert::Expected<std::vector<std::string>> labels = std::vector<std::string>{};
  densert::Expected<densert::Preprocessing> preprocessing = densert::Status::internal("unset");
  int64_t max_batch = 0;
};

struct densert_context {
  const densert_model* model = nullptr;
  std::unique_ptr<densert::ExecutionContext> context;
};

namespace {

thread_local std::string last_error;

densert_status to_c(const densert::Status& status) {
  switch (status.kind()) {
    case densert::ErrorKind::kOk:
      return DENSERT_OK;
    case densert::ErrorKind::kInvalidModel:
      return DENSERT_INVALID_MODEL;
    case densert::ErrorKind::kUnsupported:
      return DENSERT_UNSUPPORTED;
    case densert::ErrorKind::kBadArgument:
      return DENSERT_BAD_ARGUMENT;
    case densert::ErrorKind::kInternal:
      return DENSERT_INTERNAL_ERROR;
  }
  return DENSERT_INTERNAL_ERROR;
}

densert_status fail(const densert::Status& status) {
  last_error = status.message();
  return to_c(status);
}

densert_status bad_argument(const char* function, const std::string& what) {
  return fail(densert::Status::bad_argument(std::string(function) + ": " + what));
}

// Every entry point that returns a status runs through here: the message is cleared first, so
// a successful call leaves densert_last_error() "", and any escaping exception becomes
// DENSERT_INTERNAL_ERROR.
template <typename Body>
densert_status guarded(Body body) {
  try {
    last_error.clear();
    return body();
  } catch (const std::bad_alloc&) {
    return fail(densert::Status::internal("out of memory"));
  } catch (const std::exception& e) {
    return fail(densert::Status::internal(e.what()));
  } catch (...) {
    return fail(densert::Status::internal("unknown exception"));
  }
}

densert_status finish_load(densert::Expected<densert::Graph> graph, const densert_options* options,
                           densert_model** out) {
  if (!graph.ok()) return fail(graph.status());
  densert::EngineOptions engine_options;
  densert_options defaults;
  if (!options) options = &defaults;
  engine_options.threads = options->threads;
  engine_options.element_type = densert::ElementType::kF32;  // the only precision offered
  auto model = std::make_unique<densert_model>();
  for (densert::ValueId id : graph->inputs) {
    model->input_names.push_back(graph->value(id).name);
    model->input_dims.push_back(graph->value(id).dims);
  }
  for (densert::ValueId id : graph->outputs) {
    model->output_names.push_back(graph->value(id).name);
    model->output_dims.push_back(graph->value(id).dims);
  }
  for (const densert::Dims& dims : model->input_dims) {
    if (dims.size() > DENSERT_MAX_DIMS)
      return fail(densert::Status::unsupported("input rank exceeds DENSERT_MAX_DIMS"));
  }
  const int64_t classes = model->output_dims.empty() || model->output_dims[0].empty()
                              ? 0
                              : model->output_dims[0].back();
  model->labels = densert::labels_from_metadata(graph->metadata, classes);
  model->preprocessing =
      densert::preprocessing_from_metadata(graph->metadata, model->input_dims[0]);
  model->max_batch = options->max_batch;
  auto engine = densert::Engine::create(std::move(*graph), engine_options);
  if (!engine.ok()) return fail(engine.status());
  model->engine = *engine;
  *out = model.release();
  return DENSERT_OK;
}

densert_status tensor_info(const std::vector<std::string>& names,
                           const std::vector<densert::Dims>& dims, size_t index,
                           densert_tensor_info* info, const char* function) {
  if (!info) return bad_argument(function, "info is null");
  if (index >= names.size()) {
    return bad_argument(function, "index " + std::to_string(index) + " is out of range (" +
                                      std::to_string(names.size()) + " tensors)");
  }
  if (dims[index].size() > DENSERT_MAX_DIMS)
    return bad_argument(function, "rank exceeds DENSERT_MAX_DIMS");
  info->name = names[index].c_str();
  info->element_type = DENSERT_FLOAT32;
  info->rank = static_cast<int>(dims[index].size());
  for (size_t d = 0; d < dims[index].size(); ++d)
    info->dims[d] = dims[index][d];
  return DENSERT_OK;
}

}  // namespace

extern "C" {

const char* densert_version(void) {
  return DENSERT_VERSION;
}

const char* densert_last_error(void) {
  return last_error.c_str();
}

densert_status densert_options_create(densert_options** options) {
  const char* fn = __func__;
  return guarded([&] {
    if (!options) return bad_argument(fn, "options is null");
    *options = new densert_options();
    return DENSERT_OK;
  });
}

void densert_options_destroy(densert_options* options) {
  delete options;
}

densert_status densert_options_set_threads(densert_options* options, int threads) {
  const char* fn = __func__;
  return guarded([&] {
    if (!options) return bad_argument(fn, "options is null");
    if (threads < 0 || threads > DENSERT_MAX_THREADS) {
      return bad_argument(fn, "threads " + std::to_string(threads) + " is outside 0 to " +
                                  std::to_string(DENSERT_MAX_THREADS));
    }
    options->threads = threads;
    return DENSERT_OK;
  });
}

densert_status densert_options_set_precision(densert_options* options,
                                             densert_precision precision) {
  const char* fn = __func__;
  // A C caller can pass any int; C++ may not read an enum outside its enumerators' range, so the
  // value is copied out as the int it is.
  static_assert(sizeof(densert_precision) == sizeof(int));
  int value = 0;
  std::memcpy(&value, &precision, sizeof(value));
  return guarded([&] {
    if (!options) return bad_argument(fn, "options is null");
    if (value != DENSERT_PRECISION_F32) {
      return fail(densert::Status::unsupported("precision " + std::to_string(value) +
                                               " is not available; use f32"));
    }
    options->precision = DENSERT_PRECISION_F32;
    return DENSERT_OK;
  });
}

densert_status densert_options_set_max_batch(densert_options* options, int64_t max_batch) {
  const char* fn = __func__;
  return guarded([&] {
    if (!options) return bad_argument(fn, "options is null");
    if (max_batch < 0)
      return bad_argument(fn, "max_batch " + std::to_string(max_batch) + " is negative");
    options->max_batch = max_batch;
    return DENSERT_OK;
  });
}

densert_status densert_model_load_file(const char* path, const densert_options* options,
                                       densert_model** model) {
  const char* fn = __func__;
  return guarded([&] {
    if (!path || !model) return bad_argument(fn, "path and model must not be null");
    *model = nullptr;
    return finish_load(densert::import_onnx_file(path), options, model);
  });
}

densert_status densert_model_load_memory(const void* data, size_t size,
                                         const densert_options* options, densert_model** model) {
  const char* fn = __func__;
  return guarded([&] {
    if (!model) return bad_argument(fn, "model is null");
    *model = nullptr;
    if (!data) return bad_argument(fn, "data is null");
    return finish_load(densert::import_onnx_buffer(data, size), options, model);
  });
}

void densert_model_destroy(densert_model* model) {
  delete model;
}

size_t densert_model_input_count(const densert_model* model) {
  return model ? model->input_names.size() : 0;
}

size_t densert_model_output_count(const densert_model* model) {
  return model ? model->output_names.size() : 0;
}

densert_status densert_model_input_info(const densert_model* model, size_t index,
                                        densert_tensor_info* info) {
  const char* fn = __func__;
  return guarded([&] {
    if (!model) return bad_argument(fn, "model is null");
    return tensor_info(model->input_names, model->input_dims, index, info, fn);
  });
}

densert_status densert_model_output_info(const densert_model* model, size_t index,
                                         densert_tensor_info* info) {
  const char* fn = __func__;
  return guarded([&] {
    if (!model) return bad_argument(fn, "model is null");
    return tensor_info(model->output_names, model->output_dims, index, info, fn);
  });
}

densert_status densert_model_label(const densert_model* model, int64_t index, const char** label) {
  const char* fn = __func__;
  return guarded([&] {
    if (!model || !label) return bad_argument(fn, "model and label must not be null");
    *label = nullptr;
    if (index < 0) return bad_argument(fn, "index " + std::to_string(index) + " is negative");
    if (!model->labels.ok()) return fail(model->labels.status());
    const std::vector<std::string>& labels = *model->labels;
    if (labels.empty()) return DENSERT_OK;  // no labels: NULL for every class
    if (index >= static_cast<int64_t>(labels.size())) {
      return bad_argument(fn, "index " + std::to_string(index) + " is not below the model's " +
                                  std::to_string(labels.size()) + " classes");
    }
    *label = labels[index].c_str();
    return DENSERT_OK;
  });
}

densert_status densert_context_create(const densert_model* model, densert_context** context) {
  const char* fn = __func__;
  return guarded([&] {
    if (!model || !context) return bad_argument(fn, "model and context must not be null");
    *context = nullptr;
    auto created = model->engine->create_context();
    if (!created.ok()) return fail(created.status());
    *context = new densert_context{model, std::move(created).value()};
    return DENSERT_OK;
  });
}

void densert_context_destroy(densert_context* context) {
  delete context;
}

densert_status densert_run(densert_context* context, int64_t batch, const float* const* inputs,
                           size_t input_count, float* const* outputs, size_t output_count) {
  const char* fn = __func__;
  return guarded([&] {
    if (!context) return bad_argument(fn, "context is null");
    const densert_model* model = context->model;
    if (input_count != model->input_names.size() || output_count != model->output_names.size()) {
      return bad_argument(fn, "model takes " + std::to_string(model->input_names.size()) +
                                  " inputs and " + std::to_string(model->output_names.size()) +
                                  " outputs, " + std::to_string(input_count) + " and " +
                                  std::to_string(output_count) + " given");
    }
    if (model->max_batch > 0 && batch > model->max_batch) {
      return bad_argument(fn, "batch " + std::to_string(batch) + " exceeds the maximum batch " +
                                  std::to_string(model->max_batch));
    }
    const densert::Status status = model->engine->run(*context->context, batch, inputs, outputs);
    return status.ok() ? DENSERT_OK : fail(status);
  });
}

densert_status densert_load_image(const densert_model* model, const char* path, float* input,
                                  size_t capacity) {
  const char* fn = __func__;
  return guarded([&] {
    if (!model || !path || !input)
      return bad_argument(fn, "model, path and input must not be null");
    if (!model->preprocessing.ok()) return fail(model->preprocessing.status());
    auto image = densert::load_image(path, *model->preprocessing);
    if (!image.ok()) return fail(image.status());
    const size_t needed = static_cast<size_t>(model->engine->input_elements_per_image(0));
    if (image->data.size() != needed) {
      return bad_argument(fn, "preprocessing gives " + std::to_string(image->data.size()) +
                                  " values, the model's input takes " + std::to_string(needed));
    }
    if (capacity < needed) {
      return bad_argument(fn, "buffer holds " + std::to_string(capacity) + " floats, " +
                                  std::to_string(needed) + " needed");
    }
    std::copy(image->data.begin(), image->data.end(), input);
    return DENSERT_OK;
  });
}

}  // extern "C"
