// The bfloat16-weight GEMM on AVX-512 BF16 (bf16_gemm.h): vdpbf16ps multiplies 16 lanes of bf16 pairs
// and adds both products into each float32 sum, twice the multiply-adds of a float32 FMA per
// instruction, on half the weight bytes. A register tile is up to 12 rows x one panel (2 vectors of 16
// columns): per pair of inputs it loads the panel's two weight vectors and broadcasts each row's pair
// (24 sums, 2 weight and 1 broadcast registers of 32 zmm); the gate_up form applies SiLU-and-multiply
// to the tile's gate and up sums before they leave the registers. Rows go in blocks of 96 whose rounded
// activations stay in L2 while every panel of the thread passes under them; a decode step's few rows
// stream each panel once from memory, prefetched ahead into L2.
#include <immintrin.h>

#include <algorithm>
#include <utility>

#include "bf16_gemm.h"

namespace loomlm::avx512 {
namespace {

#define LOOMLM_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

constexpr int kTileRows = 12;
constexpr int64_t kRowBlock = 96;
constexpr int kPrefetchRowsMax = 4;    // tiles this short stream the weights from memory: prefetch them
constexpr int64_t kPrefetchPairs = 32;  // 4 KB of a panel ahead

// acc += a . w over bf16 pairs. In asm because GCC 12 turns the intrinsic (a new value each call) into
// register copies inside a loop of many accumulators, as it did for vpdpbusd (int8_vnni.cpp).
LOOMLM_BF16 inline void dpbf16(__m512& acc, __m512i a, __m512i w) {
  asm("vdpbf16ps %2, %1, %0" : "+v"(acc) : "v"(a), "v"(w));
}

// out[0:16] (masked to `live`) = sum (+ bias).
LOOMLM_BF16 inline void store(float* out, __mmask16 live, __m512 sum, const float* bias) {
  if (bias) sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(live, bias));
  _mm512_mask_storeu_ps(out, live, sum);
}

// model_ops.cpp's vector_exp (avx2_math.h's exp8) on 16 lanes: the same operations, so the same values.
LOOMLM_BF16 inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
  const __m512 n = _mm512_roundscale_ps(
      _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _mm512_set1_ps(0.5f)),
      _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_add_ps(_mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f))),
                                 _mm512_mul_ps(n, _mm512_set1_ps(2.12194440e-4f)));
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  for (const float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f})
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(c));
  const __m512 poly = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p, r), r), r), _mm512_set1_ps(1.f));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(poly, _mm512_castsi512_ps(bits));
}

// out[0:16] (masked to `live`) = silu(gate) * up, silu_mul_rows' operations in its order.
LOOMLM_BF16 inline void store_silu_mul(float* out, __mmask16 live, __m512 gate, __m512 up) {
  const __m512 denominator = _mm512_add_ps(_mm512_set1_ps(1.f), exp16(_mm512_sub_ps(_mm512_setzero_ps(), gate)));
  _mm512_mask_storeu_ps(out, live, _mm512_mul_ps(_mm512_div_ps(gate, denominator), up));
}

// Rows R... of a tile times one panel: out rows ldo apart, columns masked by live0 / live1; with
// kSiluMul the panel is gate (lanes 0-15) | up (16-31) and one 16-column row of silu(gate) * up is
// stored per row, masked by live0, as the sums leave the registers. Every
// register array is indexed by pack expansion, never a loop counter: GCC 12 keeps the 24 sums in
// registers then (with a loop it stored them to the stack each step, lora_avx512.cpp). Not inlined:
// one body per height.
template <bool kPrefetch, bool kSiluMul, int... R>
LOOMLM_BF16 __attribute__((noinline)) void tile_body(std::integer_sequence<int, R...>, const uint32_t* xb,
                                                     int64_t ldx, int64_t pairs, const uint32_t* panel, float* out,
                                                     int64_t ldo, __mmask16 live0, __mmask16 live1,
                                                     const float* bias) {
  constexpr int H = sizeof...(R);
  const uint32_t* const rows[H] = {(xb + R * ldx)...};
  __m512 acc0[H] = {(R, _mm512_setzero_ps())...};
  __m512 acc1[H] = {(R, _mm512_setzero_ps())...};
  for (int64_t j = 0; j < pairs; ++j) {
    const uint32_t* w = panel + j * kBf16PanelWidth;
    if constexpr (kPrefetch) {
      _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetchPairs * kBf16PanelWidth), _MM_HINT_T1);
      _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetchPairs * kBf16PanelWidth + 16), _MM_HINT_T1);
    }
    const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 16);
    ((dpbf16(acc0[R], _mm512_set1_epi32(static_cast<int>(rows[R][j])), w0),
      dpbf16(acc1[R], _mm512_set1_epi32(static_cast<int>(rows[R][j])), w1)),
     ...);
  }
  if constexpr (kSiluMul) {
    (store_silu_mul(out + R * ldo, live0, acc0[R], acc1[R]), ...);
  } else {
    (store(out + R * ldo, live0, acc0[R], bias), ...);
    (store(out + R * ldo + 16, live1, acc1[R], bias ? bias + 16 : nullptr), ...);
  }
}

using TileFn = void (*)(const uint32_t*, int64_t, int64_t, const uint32_t*, float*, int64_t, __mmask16, __mmask16,
                        const float*);

template <bool kSiluMul, int H>
LOOMLM_BF16 void tile(const uint32_t* xb, int64_t ldx, int64_t pairs, const uint32_t* panel, float* out, int64_t ldo,
                      __mmask16 live0, __mmask16 live1, const float* bias) {
  tile_body<H <= kPrefetchRowsMax, kSiluMul>(std::make_integer_sequence<int, H>(), xb, ldx, pairs, panel, out, ldo,
                                             live0, live1, bias);
}

// The tile of `height` rows, 1 <= height <= kTileRows.
template <bool kSiluMul, int... H>
TileFn tile_for(int64_t height, std::integer_sequence<int, H...>) {
  static constexpr TileFn tiles[] = {tile<kSiluMul, H + 1>...};
  return tiles[height - 1];
}

// Rows [0, rows) of one panel into out (row stride ldo), in tiles of up to kTileRows.
template <bool kSiluMul>
void panel_rows(const uint32_t* xb, int64_t rows, int64_t pairs, const uint32_t* panel, float* out, int64_t ldo,
                __mmask16 live0, __mmask16 live1, const float* bias) {
  for (int64_t r = 0; r < rows; r += kTileRows) {
    const int64_t height = std::min<int64_t>(kTileRows, rows - r);
    tile_for<kSiluMul>(height, std::make_integer_sequence<int, kTileRows>())(xb + r * pairs, pairs, pairs, panel,
                                                                              out + r * ldo, ldo, live0, live1, bias);
  }
}

inline __mmask16 live_lanes(int64_t cols) {
  return cols >= 16 ? __mmask16(0xFFFF) : cols <= 0 ? __mmask16(0) : __mmask16((1u << cols) - 1);
}

}  // namespace

bool bf16_supported() {
  static const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                                __builtin_cpu_supports("avx512bf16");
  return supported;
}

LOOMLM_BF16 void bf16_round_rows(const float* x, int64_t ldx, int64_t K, int64_t begin, int64_t end, uint32_t* xb,
                                 int64_t pairs) {
  for (int64_t r = begin; r < end; ++r) {
    const float* row = x + r * ldx;
    uint32_t* dst = xb + r * pairs;
    for (int64_t k = 0; k < K; k += 32) {
      const __mmask16 lo = live_lanes(K - k), hi = live_lanes(K - k - 16);
      const __m512i both =
          (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, row + k + 16), _mm512_maskz_loadu_ps(lo, row + k));
      // 32 bf16 = 16 pairs; the last store keeps to the row's `pairs` words.
      const int64_t words = std::min<int64_t>(16, pairs - k / 2);
      _mm512_mask_storeu_epi32(dst + k / 2, live_lanes(words), both);
    }
  }
}

void bf16_panel_gemm(const uint32_t* xb, int64_t rows, int64_t pairs, const uint32_t* panels, int64_t N,
                     const float* bias, float* out, int64_t panel_begin, int64_t panel_end) {
  for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
    const int64_t block_rows = std::min(kRowBlock, rows - r0);
    for (int64_t p = panel_begin; p < panel_end; ++p) {
      const int64_t c0 = p * kBf16PanelWidth;
      panel_rows<false>(xb + r0 * pairs, block_rows, pairs, panels + p * pairs * kBf16PanelWidth, out + r0 * N + c0,
                        N, live_lanes(N - c0), live_lanes(N - c0 - 16), bias ? bias + c0 : nullptr);
    }
  }
}

void bf16_panel_gemm_silu_mul(const uint32_t* xb, int64_t rows, int64_t pairs, const uint32_t* panels, int64_t I,
                              float* out, int64_t panel_begin, int64_t panel_end) {
  // The activation is applied as a tile's sums leave the registers: the 2I-wide product is never stored.
  for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
    const int64_t block_rows = std::min(kRowBlock, rows - r0);
    for (int64_t p = panel_begin; p < panel_end; ++p) {
      const int64_t c0 = p * kBf16GateUpWidth;
      panel_rows<true>(xb + r0 * pairs, block_rows, pairs, panels + p * pairs * kBf16PanelWidth, out + r0 * I + c0, I,
                       live_lanes(I - c0), __mmask16(0xFFFF), nullptr);
    }
  }
}

}  // namespace loomlm::avx512
