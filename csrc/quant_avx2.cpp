// The quantized linear kernels for CPUs with AVX2 and FMA but without AVX-512 VNNI (AMD Zen 2/3, Intel
// before Ice Lake): Q4_1 / Q8_0 blocks, and int8 per-channel weights. Chosen at run time
// (quant_kernels.cpp); compiled per function, so the library still loads on any x86-64.
//
// AVX2 has no int8 dot-product instruction. vpmaddubsw multiplies unsigned by signed bytes and adds
// adjacent pairs into int16 with saturation; vpmaddwd by ones widens pairs to int32. Both factors stay
// small enough that no pair saturates, so every integer sum is exact (as llama.cpp's AVX2 path):
// Q4_1's nibbles (0..15) times activations in [-127, 127], or for signed weights |w| times
// sign(w) * a, both in [0, 127] x [-127, 127] (a pair reaches at most 2 * 127 * 127 = 32258).
#include "quant_isa.h"

#include <immintrin.h>

#include <algorithm>

namespace loomlm::avx2 {
namespace {

#define LOOMLM_AVX2 __attribute__((target("avx2,fma,f16c")))

LOOMLM_AVX2 inline __m256i dot_pairs(__m256i unsigned_bytes, __m256i signed_bytes) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(unsigned_bytes, signed_bytes), _mm256_set1_epi16(1));
}

LOOMLM_AVX2 inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

LOOMLM_AVX2 inline int32_t hsum(__m256i v) {
  const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  const __m128i t = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(2, 3, 0, 1))));
}

// Output columns n0 .. n0+NT-1 for activation rows m0 .. m0+MT-1, as the AVX-512 tile: a weight block
// pair is loaded once for MT rows, an activation pair once for NT columns. Each block's scale product
// d_w * d_a is one scalar multiply, broadcast into the block's FMA; Q4_1's min term (min_w * d_a *
// sum q_a per block) is summed in scalar beside the vector accumulators.
template <bool Q4, int NT, int MT>
LOOMLM_AVX2 inline void block_tile(const PackedWeights& w, const QuantizedActivations& act, int64_t m0, int64_t K,
                                   int64_t N, int64_t n0, float* out) {
  const int64_t nb = K / kBlock, row_bytes = Q4 ? K / 2 : K;
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  __m256 acc[NT][MT];
  float min_acc[NT][MT] = {};
  for (int i = 0; i < NT; ++i)
    for (int t = 0; t < MT; ++t) acc[i][t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; b += 2) {  // nb is even: K is padded to block pairs
    __m256i a0[MT], a1[MT];
    for (int t = 0; t < MT; ++t) {
      const int8_t* row = act.q + (m0 + t) * K + b * kBlock;
      a0[t] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row));
      a1[t] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + kBlock));
    }
    for (int i = 0; i < NT; ++i) {
      const uint8_t* qs = w.qs + (n0 + i) * row_bytes;
      _mm_prefetch(reinterpret_cast<const char*>(qs + 16 * row_bytes + b * (Q4 ? 16 : 32)), _MM_HINT_T0);
      __m256i w0, w1, s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
      if (Q4) {
        const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + b * 16));
        w0 = _mm256_and_si256(packed, nibble);
        w1 = _mm256_and_si256(_mm256_srli_epi16(packed, 4), nibble);
      } else {
        s0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + b * kBlock));
        s1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + b * kBlock + kBlock));
        w0 = _mm256_abs_epi8(s0);
        w1 = _mm256_abs_epi8(s1);
      }
      const uint16_t* sc = w.scales + (n0 + i) * nb + b;
      const float d0 = _cvtsh_ss(sc[0]), d1 = _cvtsh_ss(sc[1]);
      float m0f = 0.f, m1f = 0.f;
      if (Q4) {
        m0f = _cvtsh_ss(w.mins[(n0 + i) * nb + b]);
        m1f = _cvtsh_ss(w.mins[(n0 + i) * nb + b + 1]);
      }
      for (int t = 0; t < MT; ++t) {
        const float* a_scale = act.scale + (m0 + t) * nb + b;
        const __m256i dot0 = dot_pairs(w0, Q4 ? a0[t] : _mm256_sign_epi8(a0[t], s0));
        const __m256i dot1 = dot_pairs(w1, Q4 ? a1[t] : _mm256_sign_epi8(a1[t], s1));
        acc[i][t] = _mm256_fmadd_ps(_mm256_set1_ps(d0 * a_scale[0]), _mm256_cvtepi32_ps(dot0), acc[i][t]);
        acc[i][t] = _mm256_fmadd_ps(_mm256_set1_ps(d1 * a_scale[1]), _mm256_cvtepi32_ps(dot1), acc[i][t]);
        if (Q4) {
          const float* a_sum = act.sum + (m0 + t) * nb + b;
          min_acc[i][t] += m0f * a_sum[0] + m1f * a_sum[1];
        }
      }
    }
  }
  for (int i = 0; i < NT; ++i)
    for (int t = 0; t < MT; ++t) out[(m0 + t) * N + n0 + i] = hsum(acc[i][t]) + min_acc[i][t];
}

template <bool Q4>
LOOMLM_AVX2 void block_rows(const PackedWeights& w, const QuantizedActivations& act, int64_t rows, int64_t K,
                            int64_t N, int64_t n_begin, int64_t n_end, float* out) {
  for (int64_t nc = n_begin; nc < n_end; nc += 64) {  // 64 columns stay in cache while rows pass over them
    const int64_t nc_end = std::min(n_end, nc + 64);
    int64_t m = 0;
    for (; m + 4 <= rows; m += 4) {
      int64_t n = nc;
      for (; n + 2 <= nc_end; n += 2) block_tile<Q4, 2, 4>(w, act, m, K, N, n, out);
      for (; n < nc_end; ++n) block_tile<Q4, 1, 4>(w, act, m, K, N, n, out);
    }
    for (; m < rows; ++m) {
      int64_t n = nc;
      for (; n + 4 <= nc_end; n += 4) block_tile<Q4, 4, 1>(w, act, m, K, N, n, out);
      for (; n < nc_end; ++n) block_tile<Q4, 1, 1>(w, act, m, K, N, n, out);
    }
  }
}

// int8 per-channel: one exact int32 sum over all of K per output, no per-block float work.
template <int NT, int MT>
LOOMLM_AVX2 inline void int8_tile(const int8_t* xq, int64_t m0, int64_t K, const int8_t* w, int64_t N, int64_t n0,
                                  const Int8Epilogue& e) {
  __m256i acc[NT][MT];
  for (int i = 0; i < NT; ++i)
    for (int t = 0; t < MT; ++t) acc[i][t] = _mm256_setzero_si256();
  const int64_t K32 = K / 32 * 32;
  for (int64_t k = 0; k < K32; k += 32) {
    __m256i ws[NT], wu[NT];
    for (int i = 0; i < NT; ++i) {
      const int8_t* row = w + (n0 + i) * K + k;
      _mm_prefetch(reinterpret_cast<const char*>(row + 16 * K), _MM_HINT_T0);
      ws[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row));
      wu[i] = _mm256_abs_epi8(ws[i]);
    }
    for (int t = 0; t < MT; ++t) {
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + (m0 + t) * K + k));
      for (int i = 0; i < NT; ++i)
        acc[i][t] = _mm256_add_epi32(acc[i][t], dot_pairs(wu[i], _mm256_sign_epi8(a, ws[i])));
    }
  }
  for (int i = 0; i < NT; ++i)
    for (int t = 0; t < MT; ++t) {
      int32_t total = hsum(acc[i][t]);
      for (int64_t k = K32; k < K; ++k) total += int32_t{w[(n0 + i) * K + k]} * xq[(m0 + t) * K + k];
      const float y = static_cast<float>(total) * e.x_scale[m0 + t] * e.w_scale[n0 + i];
      e.out[(m0 + t) * N + n0 + i] = e.bias ? y + e.bias[n0 + i] : y;
    }
}

}  // namespace

bool supported() {
  static const bool ok =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return ok;
}

LOOMLM_AVX2 void quantize_activations(const float* x, int64_t rows, int64_t K, int8_t* q, float* scale, float* sum) {
  const int64_t nb = K / kBlock;
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // undo the packs' lane interleave
  for (int64_t i = 0; i < rows * nb; ++i) {
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int j = 0; j < 4; ++j) {
      v[j] = _mm256_loadu_ps(x + i * kBlock + 8 * j);
      amax = _mm256_max_ps(amax, _mm256_and_ps(v[j], magnitude));
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    const float d = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m))) / 127.f;
    const __m256 id = _mm256_set1_ps(d != 0.f ? 1.f / d : 0.f);
    __m256i qi[4];  // cvtps rounds half to even (the default MXCSR mode), as the scalar nearbyint
    for (int j = 0; j < 4; ++j) qi[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], id));
    const __m256i total = _mm256_add_epi32(_mm256_add_epi32(qi[0], qi[1]), _mm256_add_epi32(qi[2], qi[3]));
    const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(qi[0], qi[1]), _mm256_packs_epi32(qi[2], qi[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i * kBlock), _mm256_permutevar8x32_epi32(bytes, order));
    scale[i] = d;
    sum[i] = d * static_cast<float>(hsum(total));
  }
}

void q4_1_rows(const PackedWeights& w, const QuantizedActivations& act, int64_t rows, int64_t K, int64_t N,
               int64_t n_begin, int64_t n_end, float* out) {
  block_rows<true>(w, act, rows, K, N, n_begin, n_end, out);
}

void q8_0_rows(const PackedWeights& w, const QuantizedActivations& act, int64_t rows, int64_t K, int64_t N,
               int64_t n_begin, int64_t n_end, float* out) {
  block_rows<false>(w, act, rows, K, N, n_begin, n_end, out);
}

LOOMLM_AVX2 void int8_rows(const int8_t* xq, int64_t rows, int64_t K, const int8_t* w, int64_t N, int64_t n_begin,
                           int64_t n_end, const Int8Epilogue& epilogue) {
  for (int64_t nc = n_begin; nc < n_end; nc += 64) {
    const int64_t nc_end = std::min(n_end, nc + 64);
    int64_t m = 0;
    for (; m + 4 <= rows; m += 4) {
      int64_t n = nc;
      for (; n + 2 <= nc_end; n += 2) int8_tile<2, 4>(xq, m, K, w, N, n, epilogue);
      for (; n < nc_end; ++n) int8_tile<1, 4>(xq, m, K, w, N, n, epilogue);
    }
    for (; m < rows; ++m) {
      int64_t n = nc;
      for (; n + 4 <= nc_end; n += 4) int8_tile<4, 1>(xq, m, K, w, N, n, epilogue);
      for (; n < nc_end; ++n) int8_tile<1, 1>(xq, m, K, w, N, n, epilogue);
    }
  }
}

}  // namespace loomlm::avx2
