// The float32 GEMM of the linear layers on AVX2 + FMA: out = x @ W (+ bias) with W prepacked in
// panels of 16 columns, [ceil(N / 16), K, 16] (f32_gemm.cpp packs it). Register tiles of 6 rows x 16
// columns (12 accumulators, 2 weight vectors, a broadcast: 15 of 16 ymm), K cut into blocks of at
// most 768 and rows into blocks of 96, so a block of x stays in L2 while a panel's block is reused by
// every tile. At the decode step's 64 rows this ran SmolLM2's shapes 1.3x faster than oneDNN's
// prepacked GEMM on an AVX2 Zen 3 (190 against 145 GFLOP/s, 2 threads); linear_kernels.py measures
// it against oneDNN and torch.mm per machine before a layer uses it.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "avx2_math.h"
#include "f32_gemm.h"

namespace loomlm::avx2 {
namespace {

constexpr int kTileRows = 6;
constexpr int64_t kMaxDepth = 768;  // K block: 6 rows x 768 floats of x (18 KB) beside a 48 KB panel block
constexpr int64_t kRowBlock = 96;   // 96 x 768 floats of x: 288 KB, within a Zen 3 / Skylake core's L2

// Rows [0, R) of one tile: c[r][0:cols] (=|+=) x[r] . panel block, plus bias on the first K block.
// The sums are named locals, not an array: GCC kept an array of __m256 in memory, a store per FMA
// (half the speed).
template <int R>
LOOMLM_AVX2 void tile(const float* x, int64_t ldx, const float* panel, int64_t depth, float* c, int64_t ldc,
                      int cols, const float* bias, bool first) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
         c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const float* x0 = x;
  const float* x1 = x + (R > 1 ? 1 : 0) * ldx;
  const float* x2 = x + (R > 2 ? 2 : 0) * ldx;
  const float* x3 = x + (R > 3 ? 3 : 0) * ldx;
  const float* x4 = x + (R > 4 ? 4 : 0) * ldx;
  const float* x5 = x + (R > 5 ? 5 : 0) * ldx;
  for (int64_t k = 0; k < depth; ++k) {
    const __m256 w0 = _mm256_loadu_ps(panel + k * kPanelWidth), w1 = _mm256_loadu_ps(panel + k * kPanelWidth + 8);
    __m256 v;
#define LOOMLM_ROW(r)                                \
  if constexpr (R > r) {                             \
    v = _mm256_broadcast_ss(x##r + k);               \
    c##r##0 = _mm256_fmadd_ps(v, w0, c##r##0);       \
    c##r##1 = _mm256_fmadd_ps(v, w1, c##r##1);       \
  }
    LOOMLM_ROW(0) LOOMLM_ROW(1) LOOMLM_ROW(2) LOOMLM_ROW(3) LOOMLM_ROW(4) LOOMLM_ROW(5)
#undef LOOMLM_ROW
  }
  const __m256 sums[kTileRows][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  __m256 add0 = _mm256_setzero_ps(), add1 = add0;
  if (first && bias != nullptr) {
    alignas(32) float padded[kPanelWidth] = {};
    std::memcpy(padded, bias, sizeof(float) * cols);
    add0 = _mm256_load_ps(padded), add1 = _mm256_load_ps(padded + 8);
  }
  for (int r = 0; r < R; ++r) {
    float* row = c + r * ldc;
    alignas(32) float buffer[kPanelWidth];
    float* dst = cols == kPanelWidth ? row : buffer;
    if (!first && cols != kPanelWidth) std::memcpy(buffer, row, sizeof(float) * cols);
    __m256 s0 = _mm256_add_ps(sums[r][0], add0), s1 = _mm256_add_ps(sums[r][1], add1);
    if (!first) s0 = _mm256_add_ps(_mm256_loadu_ps(dst), s0), s1 = _mm256_add_ps(_mm256_loadu_ps(dst + 8), s1);
    _mm256_storeu_ps(dst, s0), _mm256_storeu_ps(dst + 8, s1);
    if (dst == buffer) std::memcpy(row, buffer, sizeof(float) * cols);
  }
}

LOOMLM_AVX2 void tiles(const float* x, int64_t ldx, int64_t rows, const float* panel, int64_t depth, float* c,
                       int64_t ldc, int cols, const float* bias, bool first) {
  int64_t r = 0;
  for (; r + kTileRows <= rows; r += kTileRows)
    tile<kTileRows>(x + r * ldx, ldx, panel, depth, c + r * ldc, ldc, cols, bias, first);
  const float* xr = x + r * ldx;
  float* cr = c + r * ldc;
  switch (rows - r) {
    case 5: tile<5>(xr, ldx, panel, depth, cr, ldc, cols, bias, first); break;
    case 4: tile<4>(xr, ldx, panel, depth, cr, ldc, cols, bias, first); break;
    case 3: tile<3>(xr, ldx, panel, depth, cr, ldc, cols, bias, first); break;
    case 2: tile<2>(xr, ldx, panel, depth, cr, ldc, cols, bias, first); break;
    case 1: tile<1>(xr, ldx, panel, depth, cr, ldc, cols, bias, first); break;
    default: break;
  }
}

// out[r][0:cols] = silu(s[r][0:8]) * s[r][8:16] for the rows of a panel's gate | up sums: the same
// operations as model_ops.cpp's silu_mul_rows, so the same values.
LOOMLM_AVX2 void silu_mul_epilogue(const float* sums, int64_t rows, float* out, int64_t ldo, int cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const __m256 gate = _mm256_loadu_ps(sums + r * kPanelWidth), up = _mm256_loadu_ps(sums + r * kPanelWidth + 8);
    const __m256 denominator = _mm256_add_ps(_mm256_set1_ps(1.f), exp8(_mm256_sub_ps(_mm256_setzero_ps(), gate)));
    const __m256 value = _mm256_mul_ps(_mm256_div_ps(gate, denominator), up);
    if (cols == kGateUpWidth) {
      _mm256_storeu_ps(out + r * ldo, value);
    } else {
      alignas(32) float lane[kGateUpWidth];
      _mm256_store_ps(lane, value);
      std::memcpy(out + r * ldo, lane, sizeof(float) * cols);
    }
  }
}

}  // namespace

void f32_panel_gemm_silu_mul(const float* x, int64_t rows, int64_t K, int64_t ldx, const float* panels, int64_t I,
                             float* out, int64_t panel_begin, int64_t panel_end) {
  // A panel's sums for a block of rows go to a small buffer (every K block adding in), then the
  // epilogue writes I-wide rows: the 2I-wide gate_up output is never stored.
  const int64_t num_depth_blocks = (K + kMaxDepth - 1) / kMaxDepth;
  const int64_t depth_block = (K + num_depth_blocks - 1) / num_depth_blocks;
  alignas(32) float sums[kRowBlock * kPanelWidth];
  for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
    const int64_t block_rows = std::min(kRowBlock, rows - r0);
    for (int64_t p = panel_begin; p < panel_end; ++p) {
      for (int64_t k0 = 0; k0 < K; k0 += depth_block)
        tiles(x + r0 * ldx + k0, ldx, block_rows, panels + (p * K + k0) * kPanelWidth, std::min(depth_block, K - k0),
              sums, kPanelWidth, kPanelWidth, nullptr, k0 == 0);
      const int cols = static_cast<int>(std::min<int64_t>(kGateUpWidth, I - p * kGateUpWidth));
      silu_mul_epilogue(sums, block_rows, out + r0 * I + p * kGateUpWidth, I, cols);
    }
  }
}

void f32_panel_gemm(const float* x, int64_t rows, int64_t K, int64_t ldx, const float* panels, int64_t N,
                    const float* bias, float* out, int64_t panel_begin, int64_t panel_end) {
  // K in equal blocks of at most kMaxDepth (1536 -> 2 x 768). K >= 1 (the op answers K = 0 itself).
  const int64_t num_depth_blocks = (K + kMaxDepth - 1) / kMaxDepth;
  const int64_t depth_block = (K + num_depth_blocks - 1) / num_depth_blocks;
  for (int64_t k0 = 0; k0 < K; k0 += depth_block) {
    const int64_t depth = std::min(depth_block, K - k0);
    for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
      const int64_t block_rows = std::min(kRowBlock, rows - r0);
      for (int64_t p = panel_begin; p < panel_end; ++p) {
        const int cols = static_cast<int>(std::min<int64_t>(kPanelWidth, N - p * kPanelWidth));
        tiles(x + r0 * ldx + k0, ldx, block_rows, panels + (p * K + k0) * kPanelWidth, depth,
              out + r0 * N + p * kPanelWidth, N, cols, bias == nullptr ? nullptr : bias + p * kPanelWidth, k0 == 0);
      }
    }
  }
}

}  // namespace loomlm::avx2
