// The int8 per-channel GEMM for many rows (prefill chunks, wide decode batches) on AVX2 CPUs, as a
// blocked GEMM: a panel of 16 weight columns is widened to int16 pairs once and kept in L1 while
// blocks of activation rows (widened too) pass over it, 5 rows x 16 columns of int32 sums in
// registers; K is split into chunks whose panel part fits L1 (the down projection's 1536 inputs make
// a 48 KB panel). vpmaddwd multiplies int16 pairs and adds each pair into int32: 16 multiply-adds per
// instruction, exact for any int8 inputs, with no sign trick and no horizontal sums (measured on Zen 3:
// 71 G multiply-adds/s a core, against 68 for vpmaddubsw's chain and 45 for float32 FMA).
// The tile kernel of quant_avx2.cpp stays for few rows, where the weights' bytes bind instead.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "quant_isa.h"

namespace loomlm::avx2 {
namespace {

#define LOOMLM_AVX2 __attribute__((target("avx2,fma,f16c")))

constexpr int kPanelCols = 16;  // two ymm of int32 sums per row
constexpr int kTileRows = 5;    // 10 accumulators, 2 weight vectors, a broadcast and a product: 14 of 16 ymm
constexpr int64_t kBlockBytes = 192 * 1024;  // a block of widened activation rows stays in L2
constexpr int64_t kChunkPairs = 256;        // a panel's K chunk (16 KB of int16 pairs) stays in L1
constexpr int kPrefetchLinesPerTile = 8;    // the next panel's lines requested before each tile

int64_t padded(int64_t K) { return (K + 15) / 16 * 16; }

// The 8 x 8 transpose of 32-bit lanes (one lane = one k-pair of one column).
LOOMLM_AVX2 inline void transpose8(__m256i r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(_mm256_castsi256_ps(r[2 * i]), _mm256_castsi256_ps(r[2 * i + 1]));
    t[2 * i + 1] = _mm256_unpackhi_ps(_mm256_castsi256_ps(r[2 * i]), _mm256_castsi256_ps(r[2 * i + 1]));
  }
  for (int h = 0; h < 2; ++h) {
    u[4 * h + 0] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0x44);
    u[4 * h + 1] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0xEE);
    u[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
    u[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_castps_si256(_mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
    r[i + 4] = _mm256_castps_si256(_mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
  }
}

// panel[p * 32 + 2 * j + e] = w[n0 + j, 2 * p + e] as int16: pair p of the 16 columns; columns past
// `cols` and k past K are zeros.
LOOMLM_AVX2 void pack_panel(const int8_t* w, int64_t K, int64_t n0, int cols, int16_t* panel) {
  const int64_t K16 = padded(K), full = cols == kPanelCols ? K / 16 * 16 : 0;
  for (int half = 0; half < 2; ++half) {
    const int8_t* rows = w + (n0 + 8 * half) * K;
    for (int64_t k = 0; k < full; k += 16) {
      __m256i r[8];
      for (int j = 0; j < 8; ++j)
        r[j] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + j * K + k)));
      transpose8(r);
      for (int p = 0; p < 8; ++p)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(panel + (k / 2 + p) * 32 + 16 * half), r[p]);
    }
  }
  for (int64_t k = full; k < K16; ++k)
    for (int j = 0; j < kPanelCols; ++j)
      panel[(k / 2) * 32 + 2 * j + k % 2] = j < cols && k < K ? w[(n0 + j) * K + k] : 0;
}

// Activation rows widened to int16 pairs and interleaved per tile: pair p of the tile's row r at
// x16[(p * kTileRows + r) * 2], so a tile reads one sequential stream (a short last tile reads only
// its own rows).
LOOMLM_AVX2 void widen(const int8_t* xq, int64_t K, int64_t rows, int16_t* x16) {
  const int64_t K16 = padded(K), full = K / 16 * 16, tile_elems = K16 * kTileRows;
  for (int64_t m = 0; m < rows; ++m) {
    int16_t* tile_base = x16 + (m / kTileRows) * tile_elems + (m % kTileRows) * 2;
    for (int64_t k = 0; k < full; k += 16) {
      alignas(32) int32_t pairs[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(pairs),
                         _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xq + m * K + k))));
      for (int p = 0; p < 8; ++p) std::memcpy(tile_base + (k / 2 + p) * kTileRows * 2, pairs + p, sizeof(int32_t));
    }
    for (int64_t k = full; k < K16; ++k) tile_base[(k / 2) * kTileRows * 2 + k % 2] = k < K ? xq[m * K + k] : 0;
  }
}

LOOMLM_AVX2 inline __m256i pair_at(const int16_t* x) {
  int32_t pair;
  std::memcpy(&pair, x, sizeof pair);
  return _mm256_set1_epi32(pair);
}

// Row m's sums for columns n0 .. n0+cols-1, rescaled through the epilogue.
LOOMLM_AVX2 inline void store(const __m256i sums[2], const Int8Epilogue& e, int64_t m, int64_t n0, int64_t N,
                              int cols) {
  const __m256 x_scale = _mm256_set1_ps(e.x_scale[m]);
  alignas(32) float row[kPanelCols];
  for (int h = 0; h < 2; ++h) {
    if (8 * h >= cols) break;
    // Past `cols` the weight scales and bias are read from zeros (row is not copied there).
    const float* w_scale = e.w_scale + n0 + 8 * h;
    __m256 y, ws, b = _mm256_setzero_ps();
    if (cols >= 8 * (h + 1)) {
      ws = _mm256_loadu_ps(w_scale);
      if (e.bias) b = _mm256_loadu_ps(e.bias + n0 + 8 * h);
    } else {
      alignas(32) float part[8] = {}, part_bias[8] = {};
      std::memcpy(part, w_scale, sizeof(float) * (cols - 8 * h));
      if (e.bias) std::memcpy(part_bias, e.bias + n0 + 8 * h, sizeof(float) * (cols - 8 * h));
      ws = _mm256_load_ps(part);
      b = _mm256_load_ps(part_bias);
    }
    y = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sums[h]), x_scale), ws);
    if (e.bias) y = _mm256_add_ps(y, b);
    _mm256_store_ps(row + 8 * h, y);
  }
  std::memcpy(e.out + m * N + n0, row, sizeof(float) * cols);
}

// A tile of R rows (R <= 5) times the panel's pairs [p_begin, p_end). Sums start from zero on the
// first K chunk and from `partial` after it; the last chunk stores through the epilogue, the others
// back to `partial`. The accumulators are named variables, not an array: GCC kept an array's copy on
// the stack in sync with the registers, a store per multiply (measured: 27 against 50+ G
// multiply-adds/s). The template drops the rows a short tile lacks, so a batch of 32 costs 32 rows
// of work, not 35.
template <int R>
LOOMLM_AVX2 inline void tile(const int16_t* x, const int16_t* panel, int64_t p_begin, int64_t p_end,
                             int32_t* partial, bool first, bool last, const Int8Epilogue& e, int64_t m0, int64_t n0,
                             int64_t N, int cols) {
  __m256i c00, c01, c10, c11, c20, c21, c30, c31, c40, c41;
  if (first) {
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = _mm256_setzero_si256();
  } else {
    const __m256i* saved = reinterpret_cast<const __m256i*>(partial);
    c00 = _mm256_loadu_si256(saved), c01 = _mm256_loadu_si256(saved + 1);
    c10 = _mm256_loadu_si256(saved + 2), c11 = _mm256_loadu_si256(saved + 3);
    c20 = _mm256_loadu_si256(saved + 4), c21 = _mm256_loadu_si256(saved + 5);
    c30 = _mm256_loadu_si256(saved + 6), c31 = _mm256_loadu_si256(saved + 7);
    c40 = _mm256_loadu_si256(saved + 8), c41 = _mm256_loadu_si256(saved + 9);
  }
  const int16_t *x0 = x, *x1 = x + 2, *x2 = x + 4, *x3 = x + 6, *x4 = x + 8;
  for (int64_t p = p_begin; p < p_end; ++p) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + p * 32));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + p * 32 + 16));
#define LOOMLM_ROW(i)                                                \
  if constexpr (R > i) {                                             \
    const __m256i a = pair_at(x##i + 2 * kTileRows * p);             \
    c##i##0 = _mm256_add_epi32(c##i##0, _mm256_madd_epi16(a, w0)); \
    c##i##1 = _mm256_add_epi32(c##i##1, _mm256_madd_epi16(a, w1)); \
  }
    LOOMLM_ROW(0) LOOMLM_ROW(1) LOOMLM_ROW(2) LOOMLM_ROW(3) LOOMLM_ROW(4)
#undef LOOMLM_ROW
  }
  const __m256i sums[kTileRows][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}};
  if (last) {
    for (int r = 0; r < R; ++r) store(sums[r], e, m0 + r, n0, N, cols);
  } else {
    for (int r = 0; r < R; ++r)
      for (int h = 0; h < 2; ++h) _mm256_storeu_si256(reinterpret_cast<__m256i*>(partial) + 2 * r + h, sums[r][h]);
  }
}

using TileFn = void (*)(const int16_t*, const int16_t*, int64_t, int64_t, int32_t*, bool, bool,
                        const Int8Epilogue&, int64_t, int64_t, int64_t, int);
constexpr TileFn kTiles[kTileRows + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>, tile<5>};

}  // namespace

LOOMLM_AVX2 void int8_rows_wide(const int8_t* xq, int64_t rows, int64_t K, const int8_t* w, int64_t N,
                                int64_t n_begin, int64_t n_end, const Int8Epilogue& epilogue) {
  const int64_t K16 = padded(K), pairs = K16 / 2;
  const int64_t block = std::max<int64_t>(kTileRows, kBlockBytes / (2 * K16) / kTileRows * kTileRows);
  const int64_t block_rows = std::min(rows, block), block_tiles = (block_rows + kTileRows - 1) / kTileRows;
  std::vector<int16_t> panel(K16 * kPanelCols), x16(block_tiles * kTileRows * K16);
  // One int32 [5, 16] partial per tile of the block, between K chunks.
  std::vector<int32_t> partials(block_tiles * kTileRows * kPanelCols);
  for (int64_t m0 = 0; m0 < rows; m0 += block) {
    const int64_t mb = std::min(block, rows - m0);
    widen(xq + m0 * K, K, mb, x16.data());
    for (int64_t n0 = n_begin; n0 < n_end; n0 += kPanelCols) {
      const int cols = static_cast<int>(std::min<int64_t>(kPanelCols, n_end - n0));
      pack_panel(w, K, n0, cols, panel.data());
      // The next panel's weights are fetched into L2 while this one's tiles run.
      const char* next = reinterpret_cast<const char*>(w + (n0 + kPanelCols) * K);
      const int64_t next_bytes = std::max<int64_t>(0, std::min<int64_t>(kPanelCols, n_end - n0 - kPanelCols)) * K;
      int64_t fetched = 0;
      for (int64_t p0 = 0; p0 < pairs; p0 += kChunkPairs) {
        const int64_t p1 = std::min(pairs, p0 + kChunkPairs);
        for (int64_t m = 0; m < mb; m += kTileRows) {
          for (int i = 0; i < kPrefetchLinesPerTile && fetched < next_bytes; ++i, fetched += 64)
            _mm_prefetch(next + fetched, _MM_HINT_T1);
          const int r = static_cast<int>(std::min<int64_t>(kTileRows, mb - m));
          kTiles[r](x16.data() + m * K16, panel.data(), p0, p1,
                    partials.data() + m * kPanelCols, p0 == 0, p1 == pairs,
                    epilogue, m0 + m, n0, N, cols);
        }
      }
    }
  }
}

}  // namespace loomlm::avx2
