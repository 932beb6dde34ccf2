// Names of error kinds and the printed form of a Status.
#include "runtime/status.h"

namespace densert {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kOk:
      return "ok";
    case ErrorKind::kInvalidModel:
      return "invalid model";
    case ErrorKind::kUnsupported:
      return "unsupported";
    case ErrorKind::kBadArgument:
      return "bad argument";
    case ErrorKind::kInternal:
      return "internal error";
  }
  return "unknown error";
}

std::string Status::to_string() const {
  if (ok()) return "ok";
  return std::string(error_kind_name(kind_)) + ": " + message_;
}

}  // namespace densert
