// densert's C++ API: RAII wrappers over the C API (densert.h).
//
// Error style: every failure throws densert::Error, which carries the densert_status and the
// one-line message. Models are shared between threads; each thread runs with its own Context.
#pragma once

#include <densert/densert.h>

#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace densert {

class Error : public std::runtime_error {
 public:
  Error(densert_status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  densert_status status() const { return status_; }

 private:
  densert_status status_;
};

namespace detail {
inline void check(densert_status status) {
  if (status != DENSERT_OK) throw Error(status, densert_last_error());
}
}  // namespace detail

struct TensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // -1 marks the batch dimension

  // Elements of one image: the product of every dim but the batch.
  int64_t elements_per_image() const {
    int64_t count = 1;
    for (int64_t d : dims)
      count *= d < 0 ? 1 : d;
    return count;
  }
};

class Options {
 public:
  Options() { detail::check(densert_options_create(&raw_)); }
  ~Options() { densert_options_destroy(raw_); }
  Options(const Options&) = delete;
  Options& operator=(const Options&) = delete;

  Options& threads(int count) {
    detail::check(densert_options_set_threads(raw_, count));
    return *this;
  }
  Options& max_batch(int64_t batch) {
    detail::check(densert_options_set_max_batch(raw_, batch));
    return *this;
  }
  const densert_options* get() const { return raw_; }

 private:
  densert_options* raw_ = nullptr;
};

class Model {
 public:
  static Model load(const std::string& path, const Options& options = Options()) {
    densert_model* raw = nullptr;
    detail::check(densert_model_load_file(path.c_str(), options.get(), &raw));
    return Model(raw);
  }
  static Model from_memory(std::span<const std::byte> bytes, const Options& options = Options()) {
    densert_model* raw = nullptr;
    detail::check(densert_model_load_memory(bytes.data(), bytes.size(), options.get(), &raw));
    return Model(raw);
  }

  std::vector<TensorInfo> inputs() const {
    return infos(densert_model_input_count(get()), densert_model_input_info);
  }
  std::vector<TensorInfo> outputs() const {
    return infos(densert_model_output_count(get()), densert_model_output_info);
  }

  // The class name of an output index, or "" if the model has no labels.
  std::string label(int64_t index) const {
    const char* label = nullptr;
    detail::check(densert_model_label(get(), index, &label));
    return label ? label : "";
  }

  // One preprocessed image of input 0, as the model's metadata describes.
  std::vector<float> load_image(const std::string& path) const {
    std::vector<float> image(static_cast<size_t>(inputs().at(0).elements_per_image()));
    detail::check(densert_load_image(get(), path.c_str(), image.data(), image.size()));
    return image;
  }

  const densert_model* get() const { return raw_.get(); }

 private:
  explicit Model(densert_model* raw) : raw_(raw, densert_model_destroy) {}

  template <typename Query>
  std::vector<TensorInfo> infos(size_t count, Query query) const {
    std::vector<TensorInfo> result;
    for (size_t i = 0; i < count; ++i) {
      densert_tensor_info info{};
      detail::check(query(get(), i, &info));
      result.push_back({info.name, std::vector<int64_t>(info.dims, info.dims + info.rank)});
    }
    return result;
  }

  std::shared_ptr<densert_model> raw_;
};

class Context {
 public:
  explicit Context(const Model& model) : model_(model) {
    densert_context* raw = nullptr;
    detail::check(densert_context_create(model.get(), &raw));
    raw_.reset(raw);
  }

  // Runs `batch` images: inputs[i] and outputs[i] hold batch images of input/output i.
  void run(int64_t batch, std::span<const std::span<const float>> inputs,
           std::span<const std::span<float>> outputs) {
    std::vector<const float*> in;
    for (auto s : inputs)
      in.push_back(s.data());
    std::vector<float*> out;
    for (auto s : outputs)
      out.push_back(s.data());
    check_sizes(batch, model_.inputs(), inputs);
    check_sizes(batch, model_.outputs(), outputs);
    detail::check(densert_run(raw_.get(), batch, in.data(), in.size(), out.data(), out.size()));
  }

  // The common case: one input, one output.
  std::vector<float> run(int64_t batch, std::span<const float> input) {
    std::vector<float> output(
        static_cast<size_t>(batch * model_.outputs().at(0).elements_per_image()));
    const std::span<const float> inputs[] = {input};
    const std::span<float> outputs[] = {output};
    run(batch, inputs, outputs);
    return output;
  }

 private:
  template <typename Span>
  static void check_sizes(int64_t batch, const std::vector<TensorInfo>& infos,
                          std::span<const Span> spans) {
    if (spans.size() != infos.size()) {
      throw Error(DENSERT_BAD_ARGUMENT, "model has " + std::to_string(infos.size()) +
                                            " tensors there, " + std::to_string(spans.size()) +
                                            " given");
    }
    for (size_t i = 0; i < spans.size(); ++i) {
      const size_t needed = static_cast<size_t>(batch * infos[i].elements_per_image());
      if (spans[i].size() != needed) {
        throw Error(DENSERT_BAD_ARGUMENT, "tensor \"" + infos[i].name + "\" needs " +
                                              std::to_string(needed) + " floats for batch " +
                                              std::to_string(batch) + ", " +
                                              std::to_string(spans[i].size()) + " given");
      }
    }
  }

  struct Deleter {
    void operator()(densert_context* c) const { densert_context_destroy(c); }
  };
  Model model_;
  std::unique_ptr<densert_context, Deleter> raw_;
};

inline std::string version() {
  return densert_version();
}

}  // namespace densert
