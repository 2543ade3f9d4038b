// Loops over contiguous float rows, written plainly and compiled once per instruction set
// (target_clones: GCC picks the AVX-512, AVX2 or baseline copy when the library loads).
#include "model_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#define LOOMLM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

namespace loomlm {
namespace {

// exp(x) for the softmax and SiLU: Cephes' range reduction and degree-5 polynomial (about 1 ulp on
// the range that matters), branch-free so `omp simd` loops vectorize it; std::exp would not.
inline float vector_exp(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float poly = p * r * r + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return poly * two_n;
}

// out[i] = x[i] as bfloat16 bits, rounded to nearest even as torch rounds (a NaN becomes 0x7FC0).
inline void round_to_bf16(const float* x, int64_t n, uint16_t* out) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    out[i] = static_cast<uint16_t>((bits & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : rounded);
  }
}

}  // namespace

LOOMLM_CLONES void rms_norm_rows(const float* x, int64_t x_stride, float* residual, const float* weight, float eps,
                                 int64_t D, int64_t begin, int64_t end, float* out) {
  for (int64_t t = begin; t < end; ++t) {
    const float* row = x + t * x_stride;
    if (residual != nullptr) {
      float* r = residual + t * D;
      for (int64_t i = 0; i < D; ++i) r[i] += row[i];
      row = r;
    }
    float squares = 0.f;
#pragma omp simd reduction(+ : squares)
    for (int64_t i = 0; i < D; ++i) squares += row[i] * row[i];
    const float inv = 1.f / std::sqrt(squares / static_cast<float>(D) + eps);
    float* o = out + t * D;
    for (int64_t i = 0; i < D; ++i) o[i] = weight[i] * (row[i] * inv);
  }
}

LOOMLM_CLONES void rotary_store_rows(float* qkv, int64_t stride, int64_t rot_heads, int64_t D, const float* cos,
                                     const float* sin, int64_t k_head, int64_t kv_heads, const int64_t* slots,
                                     const CacheRows& cache, int64_t begin, int64_t end) {
  const int64_t half = D / 2;
  for (int64_t t = begin; t < end; ++t) {
    const float* c = cos + t * D;
    const float* s = sin + t * D;
    for (int64_t h = 0; h < rot_heads; ++h) {
      float* x = qkv + t * stride + h * D;
      float rotated[512];  // D <= 512, checked by the caller
      for (int64_t i = 0; i < half; ++i) rotated[i] = x[i] * c[i] + (-x[i + half]) * s[i];
      for (int64_t i = half; i < D; ++i) rotated[i] = x[i] * c[i] + x[i - half] * s[i];
      std::memcpy(x, rotated, D * sizeof(float));
    }
    if (slots[t] < 0) continue;
    const float* k = qkv + t * stride + k_head * D;
    const int64_t row = kv_heads * D, offset = slots[t] * row;
    if (cache.bf16) {
      round_to_bf16(k, row, static_cast<uint16_t*>(cache.key) + offset);
      round_to_bf16(k + row, row, static_cast<uint16_t*>(cache.value) + offset);
    } else {
      std::memcpy(static_cast<float*>(cache.key) + offset, k, row * sizeof(float));
      std::memcpy(static_cast<float*>(cache.value) + offset, k + row, row * sizeof(float));
    }
  }
}

LOOMLM_CLONES void silu_mul_rows(const float* gate_up, int64_t I, int64_t begin, int64_t end, float* out) {
  for (int64_t t = begin; t < end; ++t) {
    const float* g = gate_up + t * 2 * I;
    float* o = out + t * I;
#pragma omp simd
    for (int64_t i = 0; i < I; ++i) o[i] = g[i] / (1.f + vector_exp(-g[i])) * g[I + i];
  }
}

LOOMLM_CLONES void int8_quantize_rows(const float* x, int64_t x_stride, const float* inv_smooth, int64_t K,
                                      int64_t begin, int64_t end, int8_t* q, float* scale) {
  for (int64_t t = begin; t < end; ++t) {
    const float* row = x + t * x_stride;
    float amax = 0.f;
#pragma omp simd reduction(max : amax)
    for (int64_t i = 0; i < K; ++i) amax = std::max(amax, std::fabs(inv_smooth ? row[i] * inv_smooth[i] : row[i]));
    const float s = std::max(amax, 1e-12f) / 127.f;
    scale[t] = s;
#pragma omp simd
    for (int64_t i = 0; i < K; ++i) {
      const float y = inv_smooth ? row[i] * inv_smooth[i] : row[i];
      q[t * K + i] = static_cast<int8_t>(std::nearbyint(y / s));
    }
  }
}

LOOMLM_CLONES void int8_dequantize_rows(const int32_t* acc, const float* x_scale, const float* w_scale,
                                        const float* bias, int64_t N, int64_t begin, int64_t end, float* out) {
  for (int64_t t = begin; t < end; ++t) {
    const float s = x_scale[t];
    const int32_t* a = acc + t * N;
    float* o = out + t * N;
    if (bias) {
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) o[n] = static_cast<float>(a[n]) * s * w_scale[n] + bias[n];
    } else {
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) o[n] = static_cast<float>(a[n]) * s * w_scale[n];
    }
  }
}

LOOMLM_CLONES void decode_attention_item(const float* q, const float* key_cache, const float* value_cache,
                                         const int32_t* block_row, int64_t seq_len, int64_t block_size,
                                         int64_t kv_heads, int64_t kv_head, int64_t group, int64_t D, float scale,
                                         float* scores, float* out) {
  const int64_t token_stride = kv_heads * D;
  for (int64_t pos = 0; pos < seq_len; ++pos) {
    const int64_t slot = static_cast<int64_t>(block_row[pos / block_size]) * block_size + pos % block_size;
    const float* k = key_cache + slot * token_stride + kv_head * D;
    for (int64_t g = 0; g < group; ++g) {
      const float* qg = q + g * D;
      float dot = 0.f;
#pragma omp simd reduction(+ : dot)
      for (int64_t i = 0; i < D; ++i) dot += qg[i] * k[i];
      scores[g * seq_len + pos] = dot * scale;
    }
  }
  for (int64_t g = 0; g < group; ++g) {  // softmax, in float32 like SDPA's CPU kernel
    float* s = scores + g * seq_len;
    const float top = *std::max_element(s, s + seq_len);
    float total = 0.f;
#pragma omp simd reduction(+ : total)
    for (int64_t pos = 0; pos < seq_len; ++pos) {
      s[pos] = vector_exp(s[pos] - top);
      total += s[pos];
    }
    const float inv = 1.f / total;
    for (int64_t pos = 0; pos < seq_len; ++pos) s[pos] *= inv;
    std::fill(out + g * D, out + (g + 1) * D, 0.f);
  }
  for (int64_t pos = 0; pos < seq_len; ++pos) {
    const int64_t slot = static_cast<int64_t>(block_row[pos / block_size]) * block_size + pos % block_size;
    const float* v = value_cache + slot * token_stride + kv_head * D;
    for (int64_t g = 0; g < group; ++g) {
      const float p = scores[g * seq_len + pos];
      float* o = out + g * D;
#pragma omp simd
      for (int64_t i = 0; i < D; ++i) o[i] += p * v[i];
    }
  }
}

}  // namespace loomlm
