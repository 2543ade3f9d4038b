// AVX2 building blocks shared by the attention kernels (attention_avx2.cpp: decode rows;
// prefill_attention_avx2.cpp: causal chunks). Internal to the extension; every function needs a CPU
// with AVX2 and FMA (avx2::attention_supported()).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace loomlm::avx2 {

// Rows are gathered through the block table, so the hardware prefetcher cannot follow them: each
// pass prefetches the row this many positions ahead, every cache line of it.
constexpr int64_t kPrefetchAhead = 8;

inline void prefetch_row(const float* row, int64_t D) {
  for (int64_t i = 0; i < D; i += 16) _mm_prefetch(reinterpret_cast<const char*>(row + i), _MM_HINT_T0);
}

#define LOOMLM_AVX2 __attribute__((target("avx2,fma")))

LOOMLM_AVX2 inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// model_ops.cpp's vector_exp, eight lanes at a time (the same operations, so the same values).
LOOMLM_AVX2 inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                                 _mm256_set1_ps(0.5f)));
  const __m256 r = _mm256_add_ps(_mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f))),
                                 _mm256_mul_ps(n, _mm256_set1_ps(2.12194440e-4f)));
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  for (const float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f})
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c));
  const __m256 poly = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(p, r), r), r), _mm256_set1_ps(1.f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(poly, _mm256_castsi256_ps(bits));
}

// N chunks of 8 output floats of one query head, held in registers over every position (a fixed N:
// an array indexed by a run-time bound would live on the stack).
template <int N, typename Row>
LOOMLM_AVX2 inline void weighted_values(const float* p, int64_t seq_len, Row row, int64_t offset, float* o) {
  __m256 acc[N];
  for (int c = 0; c < N; ++c) acc[c] = _mm256_setzero_ps();
  for (int64_t pos = 0; pos < seq_len; ++pos) {
    if (pos + kPrefetchAhead < seq_len) prefetch_row(row(pos + kPrefetchAhead) + offset, 8 * N);
    const float* v = row(pos) + offset;
    const __m256 w = _mm256_set1_ps(p[pos]);
    for (int c = 0; c < N; ++c) acc[c] = _mm256_add_ps(acc[c], _mm256_mul_ps(w, _mm256_loadu_ps(v + 8 * c)));
  }
  for (int c = 0; c < N; ++c) _mm256_storeu_ps(o + offset + 8 * c, acc[c]);
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

// o[0:8 * chunks] = sum over positions of p[pos] * row(pos), 64 output floats at a time in registers.
template <typename Row>
LOOMLM_AVX2 inline void weighted_values_any(const float* p, int64_t seq_len, Row row, int64_t chunks, float* o) {
  int64_t c0 = 0;
  for (; c0 + 8 <= chunks; c0 += 8) weighted_values<8>(p, seq_len, row, 8 * c0, o);
  switch (chunks - c0) {
    case 7: weighted_values<7>(p, seq_len, row, 8 * c0, o); break;
    case 6: weighted_values<6>(p, seq_len, row, 8 * c0, o); break;
    case 5: weighted_values<5>(p, seq_len, row, 8 * c0, o); break;
    case 4: weighted_values<4>(p, seq_len, row, 8 * c0, o); break;
    case 3: weighted_values<3>(p, seq_len, row, 8 * c0, o); break;
    case 2: weighted_values<2>(p, seq_len, row, 8 * c0, o); break;
    case 1: weighted_values<1>(p, seq_len, row, 8 * c0, o); break;
    default: break;
  }
}

}  // namespace loomlm::avx2
