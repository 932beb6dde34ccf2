/* Classifies one image with densert's C API: classify_c MODEL IMAGE
 * Prints the most probable class and its softmax probability. */
#include <densert/densert.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int fail(const char* what) {
  fprintf(stderr, "classify_c: %s: %s\n", what, densert_last_error());
  return 1;
}

int main(int argc, char** argv) {
  densert_model* model = NULL;
  densert_context* context = NULL;
  densert_tensor_info input, output;
  int64_t input_size = 1, output_size = 1;
  float *image = NULL, *logits = NULL;
  int i, best = 0, status = 1;
  double sum = 0.0;
  const char* label = NULL;

  if (argc != 3) {
    fprintf(stderr, "usage: %s MODEL IMAGE\n", argv[0]);
    return 2;
  }
  if (densert_model_load_file(argv[1], NULL, &model) != DENSERT_OK)
    return fail("loading the model");
  if (densert_model_input_info(model, 0, &input) != DENSERT_OK ||
      densert_model_output_info(model, 0, &output) != DENSERT_OK) {
    status = fail("reading the model's tensors");
    goto done;
  }
  for (i = 1; i < input.rank; ++i)
    input_size *= input.dims[i];
  for (i = 1; i < output.rank; ++i)
    output_size *= output.dims[i];
  image = malloc(sizeof(float) * (size_t)input_size);
  logits = malloc(sizeof(float) * (size_t)output_size);
  if (!image || !logits) goto done;
  if (densert_load_image(model, argv[2], image, (size_t)input_size) != DENSERT_OK) {
    status = fail("loading the image");
    goto done;
  }
  if (densert_context_create(model, &context) != DENSERT_OK) {
    status = fail("creating a context");
    goto done;
  }
  {
    const float* inputs[1];
    float* outputs[1];
    inputs[0] = image;
    outputs[0] = logits;
    if (densert_run(context, 1, inputs, 1, outputs, 1) != DENSERT_OK) {
      status = fail("running the model");
      goto done;
    }
  }
  for (i = 1; i < output_size; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  for (i = 0; i < output_size; ++i)
    sum += exp(logits[i] - logits[best]);
  densert_model_label(model, best, &label);
  printf("%s %.3f\n", label ? label : "?", 1.0 / sum);
  status = 0;

done:
  free(image);
  free(logits);
  densert_context_destroy(context);
  densert_model_destroy(model);
  return status;
}
