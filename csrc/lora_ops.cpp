#include "lora_ops.h"

#include <algorithm>

#define LOOMLM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

namespace loomlm {

LOOMLM_CLONES void lora_slot_tokens(const float* x, int64_t x_stride, const int64_t* token_ids, int64_t count,
                                    const float* row, int64_t in, int64_t rank, int64_t num_modules,
                                    const int64_t* offsets, const int64_t* widths, float* out, int64_t out_stride,
                                    float* y) {
  const int64_t kc = num_modules * rank;
  std::fill(y, y + count * kc, 0.f);
  for (int64_t i = 0; i < in; ++i) {  // shrink: each row of A^T read once for all the tokens
    const float* a = row + i * kc;
    for (int64_t t = 0; t < count; ++t) {
      const float xv = x[token_ids[t] * x_stride + i];
      float* yt = y + t * kc;
#pragma omp simd
      for (int64_t j = 0; j < kc; ++j) yt[j] += xv * a[j];
    }
  }
  const float* b = row + in * kc;
  for (int64_t m = 0; m < num_modules; ++m) {  // expand: each row of B_m^T read once
    const int64_t width = widths[m];
    for (int64_t k = 0; k < rank; ++k) {
      const float* bk = b + k * width;
      for (int64_t t = 0; t < count; ++t) {
        const float yv = y[t * kc + m * rank + k];
        float* o = out + token_ids[t] * out_stride + offsets[m];
#pragma omp simd
        for (int64_t j = 0; j < width; ++j) o[j] += yv * bk[j];
      }
    }
    b += rank * width;
  }
}

}  // namespace loomlm
