// Error values used across densert: a Status with a kind and a one-line message, and
// Expected<T> for functions that return a value or an error. Nothing in densert throws
// across a public boundary; errors travel as these values.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace densert {

enum class ErrorKind {
  kOk = 0,
  kInvalidModel,  // the model file or graph is malformed or inconsistent
  kUnsupported,   // valid, but uses something densert does not implement
  kBadArgument,   // a caller-supplied argument (path, tensor, option) is wrong
  kInternal,      // a bug in densert or a failure of a dependency
};

const char* error_kind_name(ErrorKind kind);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorKind kind, std::string message) : kind_(kind), message_(std::move(message)) {}

  static Status invalid_model(std::string message) {
    return {ErrorKind::kInvalidModel, std::move(message)};
  }
  static Status unsupported(std::string message) {
    return {ErrorKind::kUnsupported, std::move(message)};
  }
  static Status bad_argument(std::string message) {
    return {ErrorKind::kBadArgument, std::move(message)};
  }
  static Status internal(std::string message) { return {ErrorKind::kInternal, std::move(message)}; }

  bool ok() const { return kind_ == ErrorKind::kOk; }
  ErrorKind kind() const { return kind_; }
  const std::string& message() const { return message_; }

  // "invalid model: node "conv_1" (Conv): ..." for printing.
  std::string to_string() const;

  // Returns a copy whose message is prefixed with context, e.g. the file name.
  Status with_context(const std::string& context) const {
    if (ok()) return *this;
    return {kind_, context + ": " + message_};
  }

 private:
  ErrorKind kind_ = ErrorKind::kOk;
  std::string message_;
};

template <typename T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : storage_(std::move(value)) {}         // NOLINT: implicit by design
  Expected(Status status) : storage_(std::move(status)) {}  // NOLINT: implicit by design

  bool ok() const { return std::holds_alternative<T>(storage_); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(storage_);
  }
  T& value() & { return std::get<T>(storage_); }
  const T& value() const& { return std::get<T>(storage_); }
  T&& value() && { return std::get<T>(std::move(storage_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> storage_;
};

}  // namespace densert

#define DENSERT_CONCAT_INNER(a, b) a##b
#define DENSERT_CONCAT(a, b) DENSERT_CONCAT_INNER(a, b)

#define DENSERT_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::densert::Status densert_status_ = (expr);        \
    if (!densert_status_.ok()) return densert_status_; \
  } while (0)

#define DENSERT_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()

#define DENSERT_ASSIGN_OR_RETURN(lhs, expr) \
  DENSERT_ASSIGN_OR_RETURN_IMPL(DENSERT_CONCAT(densert_expected_, __LINE__), lhs, expr)
