/* densert's C API: load a DenseNet (or any model densert supports) from ONNX, query its
 * inputs and outputs, and run it on caller-owned float buffers.
 *
 * Errors: every function that can fail returns a densert_status; the message of the last
 * failure on the calling thread is densert_last_error(). No function aborts or lets an
 * exception escape, and every function accepts null arguments (returning
 * DENSERT_BAD_ARGUMENT, or doing nothing for the destroy functions).
 *
 * Threads: a densert_model is immutable once loaded and may be shared by any number of
 * threads. A densert_context holds the activation memory of one run: give each thread its
 * own. Several contexts of one model run concurrently. */
#ifndef DENSERT_DENSERT_H_
#define DENSERT_DENSERT_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(DENSERT_BUILDING_LIBRARY)
#define DENSERT_API __attribute__((visibility("default")))
#else
#define DENSERT_API
#endif

typedef enum densert_status {
  DENSERT_OK = 0,
  DENSERT_INVALID_MODEL = 1, /* the model file or graph is malformed */
  DENSERT_UNSUPPORTED = 2,   /* valid, but uses something densert does not implement */
  DENSERT_BAD_ARGUMENT = 3,  /* a null pointer, wrong size, unreadable file, ... */
  DENSERT_INTERNAL_ERROR = 4 /* a bug in densert or a failure of a dependency */
} densert_status;

typedef enum densert_precision { DENSERT_PRECISION_F32 = 0 } densert_precision;

typedef enum densert_element_type { DENSERT_FLOAT32 = 1 } densert_element_type;

#define DENSERT_MAX_DIMS 8
/* More threads than this only cost time starting them. */
#define DENSERT_MAX_THREADS 1024

typedef struct densert_tensor_info {
  const char* name; /* owned by the model, valid while it lives */
  densert_element_type element_type;
  int rank;
  int64_t dims[DENSERT_MAX_DIMS]; /* -1 marks the batch dimension, fixed per run */
} densert_tensor_info;

typedef struct densert_options densert_options;
typedef struct densert_model densert_model;
typedef struct densert_context densert_context;

DENSERT_API const char* densert_version(void);
/* Message of the last failed call on this thread. Every function returning a densert_status
 * resets it, so it is "" after one that returned DENSERT_OK. */
DENSERT_API const char* densert_last_error(void);

DENSERT_API densert_status densert_options_create(densert_options** options);
DENSERT_API void densert_options_destroy(densert_options* options);
/* 0 (the default) uses the number of physical cores; more than DENSERT_MAX_THREADS is refused. */
DENSERT_API densert_status densert_options_set_threads(densert_options* options, int threads);
DENSERT_API densert_status densert_options_set_precision(densert_options* options,
                                                         densert_precision precision);
/* Runs with a larger batch are refused; 0 (the default) means no limit. */
DENSERT_API densert_status densert_options_set_max_batch(densert_options* options,
                                                         int64_t max_batch);

/* options may be NULL for the defaults. */
DENSERT_API densert_status densert_model_load_file(const char* path, const densert_options* options,
                                                   densert_model** model);
DENSERT_API densert_status densert_model_load_memory(const void* data, size_t size,
                                                     const densert_options* options,
                                                     densert_model** model);
DENSERT_API void densert_model_destroy(densert_model* model);

DENSERT_API size_t densert_model_input_count(const densert_model* model);
DENSERT_API size_t densert_model_output_count(const densert_model* model);
DENSERT_API densert_status densert_model_input_info(const densert_model* model, size_t index,
                                                    densert_tensor_info* info);
DENSERT_API densert_status densert_model_output_info(const densert_model* model, size_t index,
                                                     densert_tensor_info* info);
/* Class name from the model's metadata, or NULL through *label if it has none. An index that is
 * not below the number of labels gives DENSERT_BAD_ARGUMENT; metadata labels that are not a JSON
 * array of strings, one per class, give DENSERT_INVALID_MODEL. */
DENSERT_API densert_status densert_model_label(const densert_model* model, int64_t index,
                                               const char** label);

DENSERT_API densert_status densert_context_create(const densert_model* model,
                                                  densert_context** context);
DENSERT_API void densert_context_destroy(densert_context* context);

/* Runs `batch` images. inputs[i] holds batch * (elements of one image of input i) floats in
 * row-major order; outputs[i] receives the same for output i. The model must outlive the
 * context. */
DENSERT_API densert_status densert_run(densert_context* context, int64_t batch,
                                       const float* const* inputs, size_t input_count,
                                       float* const* outputs, size_t output_count);

/* Decodes an image file and preprocesses it as the model's metadata says (see README) into
 * one image of input 0: capacity is the number of floats `input` can hold. */
DENSERT_API densert_status densert_load_image(const densert_model* model, const char* path,
                                              float* input, size_t capacity);

#ifdef __cplusplus
}
#endif

#endif /* DENSERT_DENSERT_H_ */
