// The bfloat16-weight GEMM on AVX-512 BF16 (bf16_gemm.h): vdpbf16ps multiplies 16 lanes of bf16 pairs
// and adds both products into each float32 sum, twice the multiply-adds of a float32 FMA per
// instruction, on half the weight bytes. A register tile is up to 12 rows x one panel (2 vectors of 16
// columns): per pair of inputs it loads the panel's two weight vectors and broadcasts each row's pair
// (24 sums, 2 weight and 1 broadcast registers of 32 zmm). Rows go in blocks of 96 whose rounded
// activations stay in L2 while every panel of the thread passes under them; a decode step's few rows
// stream each panel once from memory, prefetched ahead into L2.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "bf16_gemm.h"
#include "model_ops.h"

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

// Rows R... of a tile times one panel: out rows ldo apart, columns masked by live0 / live1. Every
// register array is indexed by pack expansion, never a loop counter: GCC 12 keeps the 24 sums in
// registers then (with a loop it stored them to the stack each step, lora_avx512.cpp). Not inlined:
// one body per height.
template <bool kPrefetch, int... R>
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
  (store(out + R * ldo, live0, acc0[R], bias), ...);
  (store(out + R * ldo + 16, live1, acc1[R], bias ? bias + 16 : nullptr), ...);
}

using TileFn = void (*)(const uint32_t*, int64_t, int64_t, const uint32_t*, float*, int64_t, __mmask16, __mmask16,
                        const float*);

template <int H>
LOOMLM_BF16 void tile(const uint32_t* xb, int64_t ldx, int64_t pairs, const uint32_t* panel, float* out, int64_t ldo,
                      __mmask16 live0, __mmask16 live1, const float* bias) {
  tile_body<H <= kPrefetchRowsMax>(std::make_integer_sequence<int, H>(), xb, ldx, pairs, panel, out, ldo, live0,
                                   live1, bias);
}

// The tile of `height` rows, 1 <= height <= kTileRows.
TileFn tile_for(int64_t height) {
  static constexpr TileFn tiles[kTileRows] = {tile<1>, tile<2>, tile<3>, tile<4>,  tile<5>,  tile<6>,
                                              tile<7>, tile<8>, tile<9>, tile<10>, tile<11>, tile<12>};
  return tiles[height - 1];
}

// Rows [0, rows) of one panel into out (row stride ldo), in tiles of up to kTileRows.
void panel_rows(const uint32_t* xb, int64_t rows, int64_t pairs, const uint32_t* panel, float* out, int64_t ldo,
                __mmask16 live0, __mmask16 live1, const float* bias) {
  for (int64_t r = 0; r < rows; r += kTileRows) {
    const int64_t height = std::min<int64_t>(kTileRows, rows - r);
    tile_for(height)(xb + r * pairs, pairs, pairs, panel, out + r * ldo, ldo, live0, live1, bias);
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
      panel_rows(xb + r0 * pairs, block_rows, pairs, panels + p * pairs * kBf16PanelWidth, out + r0 * N + c0, N,
                 live_lanes(N - c0), live_lanes(N - c0 - 16), bias ? bias + c0 : nullptr);
    }
  }
}

void bf16_panel_gemm_silu_mul(const uint32_t* xb, int64_t rows, int64_t pairs, const uint32_t* panels, int64_t I,
                              float* out, int64_t panel_begin, int64_t panel_end) {
  // A panel's 16 gate | 16 up sums of a row block go to a small buffer (a gate_up row of width 16 for
  // silu_mul_rows), then the activation writes I-wide rows: the 2I-wide product is never stored.
  alignas(64) float sums[kRowBlock * kBf16PanelWidth];
  alignas(64) float activated[kRowBlock * kBf16GateUpWidth];
  for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
    const int64_t block_rows = std::min(kRowBlock, rows - r0);
    for (int64_t p = panel_begin; p < panel_end; ++p) {
      panel_rows(xb + r0 * pairs, block_rows, pairs, panels + p * pairs * kBf16PanelWidth, sums, kBf16PanelWidth,
                 __mmask16(0xFFFF), __mmask16(0xFFFF), nullptr);
      silu_mul_rows(sums, kBf16GateUpWidth, 0, block_rows, activated);
      const int64_t c0 = p * kBf16GateUpWidth, cols = std::min(kBf16GateUpWidth, I - c0);
      for (int64_t r = 0; r < block_rows; ++r)
        std::memcpy(out + (r0 + r) * I + c0, activated + r * kBf16GateUpWidth, sizeof(float) * cols);
    }
  }
}

}  // namespace loomlm::avx512
