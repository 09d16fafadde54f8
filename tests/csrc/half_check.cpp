// at::Half of torch_free.h (the step's build without PyTorch) on float32 bit patterns read from stdin: each written
// back as its fp16 bits, for tests/test_lean.py to compare with numpy's conversion (round to nearest, ties to even).
#include "torch_free.h"
#include <cstdio>

int main() {
  uint32_t u;
  while (std::fread(&u, 4, 1, stdin) == 1) {
    float f; std::memcpy(&f, &u, 4);
    at::Half h(f);
    std::fwrite(&h.x, 2, 1, stdout);
  }
  return 0;
}
