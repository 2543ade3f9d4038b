// Q4_1 / Q8_0 linear kernels: a scalar version and an AVX-512 VNNI one (the AVX2 ones are in
// quant_avx2.cpp), and the dispatch among them. The best the CPU has is chosen at run time (the same
// source builds everywhere; nothing assumes the build machine's CPU).
//
// Both follow llama.cpp's block arithmetic: activations are quantized per 32-block to int8, each
// block's integer dot product is exact, and the weight block's scale times the activation block's
// is applied per block; Q4_1 adds the block's min times the activation block's sum.
#include "quant_kernels.h"

#include "quant_isa.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace loomlm {
namespace {

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // a subnormal half: normalise it
    exponent = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

// ---- scalar ----

void quantize_activations_scalar(const float* x, int64_t rows, int64_t K, int8_t* q, float* scale, float* sum) {
  const int64_t nb = K / kBlock;
  for (int64_t i = 0; i < rows * nb; ++i) {
    const float* xb = x + i * kBlock;
    float amax = 0.f;
    for (int j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    int32_t total = 0;
    for (int j = 0; j < kBlock; ++j) {
      const int32_t v = static_cast<int32_t>(std::nearbyint(xb[j] * id));  // half to even
      total += v;
      q[i * kBlock + j] = static_cast<int8_t>(v);
    }
    scale[i] = d;
    sum[i] = d * static_cast<float>(total);
  }
}

void q4_1_rows_scalar(const PackedWeights& w, const QuantizedActivations& act, int64_t rows, int64_t K, int64_t N,
                      int64_t n_begin, int64_t n_end, float* out) {
  const int64_t nb = K / kBlock;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const uint8_t* qs = w.qs + n * K / 2;
    for (int64_t m = 0; m < rows; ++m) {
      const int8_t* a = act.q + m * K;
      float total = 0.f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* pair = qs + (b / 2) * 32;
        const int shift = (b % 2) * 4;  // the pair's first block: low nibbles; second: high
        int32_t dot = 0;
        for (int j = 0; j < kBlock; ++j) dot += ((pair[j] >> shift) & 0x0f) * a[b * kBlock + j];
        total += half_to_float(w.scales[n * nb + b]) * act.scale[m * nb + b] * static_cast<float>(dot) +
                 half_to_float(w.mins[n * nb + b]) * act.sum[m * nb + b];
      }
      out[m * N + n] = total;
    }
  }
}

void q8_0_rows_scalar(const PackedWeights& w, const QuantizedActivations& act, int64_t rows, int64_t K, int64_t N,
                      int64_t n_begin, int64_t n_end, float* out) {
  const int64_t nb = K / kBlock;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const int8_t* qs = reinterpret_cast<const int8_t*>(w.qs) + n * K;
    for (int64_t m = 0; m < rows; ++m) {
      const int8_t* a = act.q + m * K;
      float total = 0.f;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t dot = 0;
        for (int j = 0; j < kBlock; ++j) dot += qs[b * kBlock + j] * a[b * kBlock + j];
        total += half_to_float(w.scales[n * nb + b]) * act.scale[m * nb + b] * static_cast<float>(dot);
      }
      out[m * N + n] = total;
    }
  }
}

// ---- AVX-512 VNNI ----
#define LOOMLM_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,fma,f16c")))

LOOMLM_AVX512 void quantize_activations_avx512(const float* x, int64_t rows, int64_t K, int8_t* q, float* scale,
                                               float* sum) {
  const int64_t nb = K / kBlock;
  const __m512 magnitude = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  for (int64_t i = 0; i < rows * nb; ++i) {
    const __m512 x0 = _mm512_loadu_ps(x + i * kBlock), x1 = _mm512_loadu_ps(x + i * kBlock + 16);
    const float amax =
        _mm512_reduce_max_ps(_mm512_max_ps(_mm512_and_ps(x0, magnitude), _mm512_and_ps(x1, magnitude)));
    const float d = amax / 127.f;
    const __m512 id = _mm512_set1_ps(d != 0.f ? 1.f / d : 0.f);
    // cvtps rounds to nearest even (the default MXCSR mode), as nearbyint does in the scalar path.
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, id));
    const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, id));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i * kBlock), _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i * kBlock + 16), _mm512_cvtepi32_epi8(q1));
    scale[i] = d;
    sum[i] = d * static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1)));
  }
}

// dpbusd gives 16 int32 lanes per 64-byte pair of blocks: lanes 0-7 the first block, 8-15 the
// second. kPairLanes[p] spreads the scales of blocks 2p, 2p+1 (of a 16-block chunk) onto them.
alignas(64) constexpr int32_t kPairLanes[8][16] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},         {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
    {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5},         {6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7},
    {8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9},         {10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11},
    {12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13}, {14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15},
};

// Output columns n .. n+NT-1 for activation rows m0 .. m0+MT-1: each 64-byte weight pair is decoded
// once and used for all MT rows, each activation pair loaded once for all NT columns, and the NT x MT
// accumulators are independent chains (one chain would wait on the FMA latency every pair). Q4
// selects the format: nibbles times signed activations (u8 x s8), or Q8_0's signed weights as |w|
// times sign(w)-adjusted activations.
constexpr int64_t kPrefetchRows = 16;

template <bool Q4, int NT, int MT>
LOOMLM_AVX512 inline void tile(const PackedWeights& w, const QuantizedActivations& act, int64_t m0, int64_t K,
                               int64_t N, int64_t n0, float* out) {
  const int64_t nb = K / kBlock, row_bytes = Q4 ? K / 2 : K;
  const __m512i nibble = _mm512_set1_epi8(0x0f);
  __m512 acc[NT][MT];
  for (int i = 0; i < NT; ++i)
    for (int t = 0; t < MT; ++t) acc[i][t] = _mm512_setzero_ps();
  for (int64_t c = 0; c < nb; c += 16) {
    const __mmask16 live = static_cast<__mmask16>((1u << std::min<int64_t>(16, nb - c)) - 1);
    __m512 a_scale[MT], w_scale[NT];
    for (int t = 0; t < MT; ++t) a_scale[t] = _mm512_maskz_loadu_ps(live, act.scale + (m0 + t) * nb + c);
    for (int i = 0; i < NT; ++i) {
      w_scale[i] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(live, w.scales + (n0 + i) * nb + c));
      if (Q4) {  // sum_b min_b * (d_a * sum q_a)_b
        const __m512 w_min = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(live, w.mins + (n0 + i) * nb + c));
        for (int t = 0; t < MT; ++t)
          acc[i][t] = _mm512_fmadd_ps(w_min, _mm512_maskz_loadu_ps(live, act.sum + (m0 + t) * nb + c), acc[i][t]);
      }
    }
    const int64_t pairs = std::min<int64_t>(16, nb - c) / 2;
    for (int64_t pp = 0; pp < pairs; ++pp) {
      const int64_t p = c / 2 + pp;
      const __m512i lanes = _mm512_load_si512(kPairLanes[pp]);
      __m512i a[MT];
      for (int t = 0; t < MT; ++t) a[t] = _mm512_loadu_si512(act.q + (m0 + t) * K + p * 64);
      for (int i = 0; i < NT; ++i) {
        const uint8_t* qs = w.qs + (n0 + i) * row_bytes;
        // Software prefetch a few tiles ahead: one core's demand misses alone stream the weights
        // at about half the bandwidth the prefetched stream reaches (measured at batch 1). Into L2,
        // as the int8 tiles do (into L1 their stream ran at half the rate on a Zen 4).
        _mm_prefetch(reinterpret_cast<const char*>(qs + kPrefetchRows * row_bytes + p * (Q4 ? 32 : 64)), _MM_HINT_T1);
        __m512i wu;
        __mmask64 negative = 0;
        if (Q4) {
          const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + p * 32));
          wu = _mm512_and_si512(
              _mm512_inserti64x4(_mm512_castsi256_si512(packed), _mm256_srli_epi16(packed, 4), 1), nibble);
        } else {
          const __m512i ws = _mm512_loadu_si512(qs + p * 64);
          wu = _mm512_abs_epi8(ws);
          negative = _mm512_movepi8_mask(ws);
        }
        const __m512 w_lanes = _mm512_permutexvar_ps(lanes, w_scale[i]);
        for (int t = 0; t < MT; ++t) {
          const __m512i at = Q4 ? a[t] : _mm512_mask_sub_epi8(a[t], negative, _mm512_setzero_si512(), a[t]);
          const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wu, at);
          const __m512 scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), w_lanes);
          acc[i][t] = _mm512_fmadd_ps(scaled, _mm512_permutexvar_ps(lanes, a_scale[t]), acc[i][t]);
        }
      }
    }
  }
  for (int i = 0; i < NT; ++i)
    for (int t = 0; t < MT; ++t) out[(m0 + t) * N + n0 + i] = _mm512_reduce_add_ps(acc[i][t]);
}

template <bool Q4, int MT>
LOOMLM_AVX512 void columns(const PackedWeights& w, const QuantizedActivations& act, int64_t m0, int64_t K, int64_t N,
                           int64_t n_begin, int64_t n_end, float* out) {
  constexpr int NT = MT == 1 ? 4 : 2;
  int64_t n = n_begin;
  for (; n + NT <= n_end; n += NT) tile<Q4, NT, MT>(w, act, m0, K, N, n, out);
  for (; n < n_end; ++n) tile<Q4, 1, MT>(w, act, m0, K, N, n, out);
}

template <bool Q4>
LOOMLM_AVX512 void rows_avx512(const PackedWeights& w, const QuantizedActivations& act, int64_t rows, int64_t K,
                               int64_t N, int64_t n_begin, int64_t n_end, float* out) {
  // Column blocks of 64 keep a block's weights in L1/L2 while every row tile passes over them.
  for (int64_t nc = n_begin; nc < n_end; nc += 64) {
    const int64_t nc_end = std::min(n_end, nc + 64);
    int64_t m = 0;
    for (; m + 4 <= rows; m += 4) columns<Q4, 4>(w, act, m, K, N, nc, nc_end, out);
    for (; m < rows; ++m) columns<Q4, 1>(w, act, m, K, N, nc, nc_end, out);
  }
}

bool has_avx512_vnni() {
  static const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
                                __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("f16c") &&
                                __builtin_cpu_supports("fma");
  return supported;
}

}  // namespace

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::kAvx512Vnni:
      return has_avx512_vnni();
    case Isa::kAvx2:
      return avx2::supported();
    default:
      return true;
  }
}

Isa best_isa() {
  if (has_avx512_vnni()) return Isa::kAvx512Vnni;
  return avx2::supported() ? Isa::kAvx2 : Isa::kScalar;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512Vnni:
      return "avx512_vnni";
    case Isa::kAvx2:
      return "avx2";
    default:
      return "scalar";
  }
}

// Each entry point runs the requested ISA's code; callers pass only supported ones (torch_ops checks).
void quantize_activations(const float* x, int64_t rows, int64_t K, int8_t* q, float* scale, float* sum, Isa isa) {
  if (isa == Isa::kAvx512Vnni) return quantize_activations_avx512(x, rows, K, q, scale, sum);
  if (isa == Isa::kAvx2) return avx2::quantize_activations(x, rows, K, q, scale, sum);
  quantize_activations_scalar(x, rows, K, q, scale, sum);
}

void q4_1_linear_rows(const PackedWeights& w, const QuantizedActivations& act, int64_t rows, int64_t K, int64_t N,
                      int64_t n_begin, int64_t n_end, float* out, Isa isa) {
  if (isa == Isa::kAvx512Vnni) return rows_avx512<true>(w, act, rows, K, N, n_begin, n_end, out);
  if (isa == Isa::kAvx2) return avx2::q4_1_rows(w, act, rows, K, N, n_begin, n_end, out);
  q4_1_rows_scalar(w, act, rows, K, N, n_begin, n_end, out);
}

void q8_0_linear_rows(const PackedWeights& w, const QuantizedActivations& act, int64_t rows, int64_t K, int64_t N,
                      int64_t n_begin, int64_t n_end, float* out, Isa isa) {
  if (isa == Isa::kAvx512Vnni) return rows_avx512<false>(w, act, rows, K, N, n_begin, n_end, out);
  if (isa == Isa::kAvx2) return avx2::q8_0_rows(w, act, rows, K, N, n_begin, n_end, out);
  q8_0_rows_scalar(w, act, rows, K, N, n_begin, n_end, out);
}

void int8_linear_rows(const int8_t* xq, int64_t rows, int64_t K, const int8_t* w, int64_t N, int64_t n_begin,
                      int64_t n_end, const Int8Epilogue& epilogue, Isa isa, int64_t gemm_from_rows) {
  if (isa == Isa::kAvx512Vnni) return avx512::int8_rows(xq, rows, K, w, N, n_begin, n_end, epilogue);
  if (isa != Isa::kScalar && avx2::supported()) {
    if (rows >= gemm_from_rows) return avx2::int8_rows_wide(xq, rows, K, w, N, n_begin, n_end, epilogue);
    return avx2::int8_rows(xq, rows, K, w, N, n_begin, n_end, epilogue);
  }
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t n = n_begin; n < n_end; ++n) {
      int32_t total = 0;
      for (int64_t k = 0; k < K; ++k) total += int32_t{w[n * K + k]} * xq[m * K + k];
      const float y = static_cast<float>(total) * epilogue.x_scale[m] * epilogue.w_scale[n];
      epilogue.out[m * N + n] = epilogue.bias ? y + epilogue.bias[n] : y;
    }
}

}  // namespace loomlm
