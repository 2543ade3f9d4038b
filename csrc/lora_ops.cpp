#include "lora_ops.h"

#include <algorithm>

#define LOOMLM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

namespace loomlm {

LOOMLM_CLONES void lora_slot_tokens(const LoRASlotTokens& s, const float* row, float* y) {
  const int64_t kc = s.num_modules * s.rank, count = s.count;
  std::fill(y, y + count * kc, 0.f);
  for (int64_t i = 0; i < s.in; ++i) {  // shrink: each row of A^T read once for all the tokens
    const float* a = row + i * kc;
    for (int64_t t = 0; t < count; ++t) {
      const float xv = s.x[s.token_ids[t] * s.x_stride + i];
      float* yt = y + t * kc;
#pragma omp simd
      for (int64_t j = 0; j < kc; ++j) yt[j] += xv * a[j];
    }
  }
  const float* b = row + s.in * kc;
  for (int64_t m = 0; m < s.num_modules; ++m) {  // expand: each row of B_m^T read once
    const int64_t width = s.widths[m];
    for (int64_t k = 0; k < s.rank; ++k) {
      const float* bk = b + k * width;
      for (int64_t t = 0; t < count; ++t) {
        const float yv = y[t * kc + m * s.rank + k];
        float* o = s.out + s.token_ids[t] * s.out_stride + s.offsets[m];
#pragma omp simd
        for (int64_t j = 0; j < width; ++j) o[j] += yv * bk[j];
      }
    }
    b += s.rank * width;
  }
}

LOOMLM_CLONES void lora_slot_tokens_int8(const LoRASlotTokens& s, const int8_t* row, const float* scales, float* y) {
  const int64_t kc = s.num_modules * s.rank, padded = lora_blocks(kc) * kLoRABlock;
  for (int64_t t = 0; t < s.count; ++t) {
    const float* x = s.x + s.token_ids[t] * s.x_stride;
    float* o = s.out + s.token_ids[t] * s.out_stride;
    std::fill(y, y + padded, 0.f);
    for (int64_t j = 0; j < padded; j += kLoRABlock) {
      const int8_t* a = row + j * s.in;
      for (int64_t i = 0; i < s.in; ++i) {
#pragma omp simd
        for (int64_t c = 0; c < kLoRABlock; ++c) y[j + c] += x[i] * float(a[i * kLoRABlock + c]);
      }
    }
    for (int64_t j = 0; j < kc; ++j) y[j] *= scales[j];
    const int8_t* b = row + padded * s.in;
    for (int64_t m = 0; m < s.num_modules; ++m) {
      for (int64_t c0 = 0; c0 < s.widths[m]; c0 += kLoRABlock, b += kLoRABlock * s.rank) {
        const int64_t cols = std::min(kLoRABlock, s.widths[m] - c0);
        float* oc = o + s.offsets[m] + c0;
        for (int64_t k = 0; k < s.rank; ++k) {
          const float yv = y[m * s.rank + k];
          for (int64_t c = 0; c < cols; ++c) oc[c] += yv * float(b[k * kLoRABlock + c]);
        }
      }
    }
  }
}

}  // namespace loomlm
