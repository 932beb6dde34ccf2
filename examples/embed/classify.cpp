// Classifies one image with densert's C++ API: classify_cpp MODEL IMAGE
// Prints the most probable class and its softmax probability.
#include <densert/densert.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s MODEL IMAGE\n", argv[0]);
    return 2;
  }
  try {
    const densert::Model model = densert::Model::load(argv[1]);
    densert::Context context(model);
    const std::vector<float> image = model.load_image(argv[2]);
    const std::vector<float> logits = context.run(1, image);

    const auto best = std::max_element(logits.begin(), logits.end());
    double sum = 0.0;
    for (float v : logits)
      sum += std::exp(v - *best);
    const long index = best - logits.begin();
    std::printf("%s %.3f\n", model.label(index).c_str(), 1.0 / sum);
  } catch (const densert::Error& e) {
    std::fprintf(stderr, "classify_cpp: %s\n", e.what());
    return 1;
  }
  return 0;
}
