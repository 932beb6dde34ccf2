// Loading the model a command works on: a file given with --model, or the built-in
// Fashion-MNIST DenseNet compiled into the densert binary.
#pragma once

#include <string>

#include "runtime/ir.h"

namespace densert::cli {

// The model file, or the built-in model when path is empty.
Expected<Graph> load_model(const std::string& path);
bool has_builtin_model();

}  // namespace densert::cli
