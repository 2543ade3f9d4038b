// AVX2 building blocks shared by the attention kernels (attention_avx2.cpp: decode rows;
// prefill_attention_avx2.cpp: causal chunks). Internal to the extension; every function needs a CPU
// with AVX2 and FMA (avx2::attention_supported()).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "avx2_math.h"

namespace loomlm::avx2 {

// Cache elements are float32, or bfloat16 held as its 16 bits (uint16_t; kv_cache_dtype="bfloat16"),
// widened to float32 exactly as they load.
LOOMLM_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
LOOMLM_AVX2 inline __m256 load8(const uint16_t* p) {
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}
inline float load1(const float* p) { return *p; }
inline float load1(const uint16_t* p) {
  const uint32_t bits = static_cast<uint32_t>(*p) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Softmax of s[0:n] in place, in float32 like SDPA's CPU kernel (n >= 1).
LOOMLM_AVX2 inline void softmax(float* s, int64_t n) {
  const float top = *std::max_element(s, s + n);
  const int64_t full = n / 8 * 8;
  __m256 total8 = _mm256_setzero_ps();
  for (int64_t pos = 0; pos < full; pos += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + pos), _mm256_set1_ps(top)));
    _mm256_storeu_ps(s + pos, e);
    total8 = _mm256_add_ps(total8, e);
  }
  float total = hsum(total8);
  for (int64_t pos = full; pos < n; ++pos) {
    alignas(32) float lane[8];
    _mm256_store_ps(lane, exp8(_mm256_set1_ps(s[pos] - top)));
    s[pos] = lane[0];
    total += lane[0];
  }
  const float inv = 1.f / total;
  for (int64_t pos = 0; pos < n; ++pos) s[pos] *= inv;
}

}  // namespace loomlm::avx2
