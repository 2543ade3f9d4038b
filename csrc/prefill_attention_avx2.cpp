// Causal attention of prefill chunks on AVX2, read straight from the paged cache: one item is a
// block of a chunk's query rows for one kv head. The item copies the keys its rows can see into a
// transposed buffer [D][positions], so the scores are a small GEMM in register tiles of 4 query
// vectors x 16 positions; then a float32 softmax per vector over its causal length, and the values
// in tiles of 4 vectors x 16 dimensions (each value row read once for 4 vectors). This replaces one
// SDPA call per sequence and layer (with its K/V gather, GQA expansion and Python around it), whose
// cost at chunks of 16-64 tokens was mostly fixed: 2.6-4.3x faster there (bench/attention.py).
#include <algorithm>

#include "attention_avx2.h"
#include "model_ops.h"

namespace loomlm::avx2 {
namespace {

constexpr int kTileVectors = 4;     // 8 accumulators, 2 key vectors, a broadcast
constexpr int64_t kTilePositions = 16;

// scores[v][j0 : j0 + 16] = scale * q_v . k_j for R query vectors (named accumulators: GCC keeps an
// array of __m256 in memory).
template <int R>
LOOMLM_AVX2 void score_tile(const float* const* q, const float* kt, int64_t kt_stride, int64_t D, float scale,
                            float* const* scores, int64_t j0) {
  __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
  for (int64_t d = 0; d < D; ++d) {
    const __m256 k0 = _mm256_loadu_ps(kt + d * kt_stride + j0), k1 = _mm256_loadu_ps(kt + d * kt_stride + j0 + 8);
    __m256 b;
#define LOOMLM_VEC(r)                          \
  if constexpr (R > r) {                       \
    b = _mm256_broadcast_ss(q[r] + d);         \
    a##r##0 = _mm256_fmadd_ps(b, k0, a##r##0); \
    a##r##1 = _mm256_fmadd_ps(b, k1, a##r##1); \
  }
    LOOMLM_VEC(0) LOOMLM_VEC(1) LOOMLM_VEC(2) LOOMLM_VEC(3)
#undef LOOMLM_VEC
  }
  const __m256 s = _mm256_set1_ps(scale);
  const __m256 sums[kTileVectors][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(scores[r] + j0, _mm256_mul_ps(sums[r][0], s));
    _mm256_storeu_ps(scores[r] + j0 + 8, _mm256_mul_ps(sums[r][1], s));
  }
}

// One kv head's rows of a paged cache, walked block by block (no division per position).
template <typename T>
struct PagedRows {
  const T* cache;
  const int32_t* block_row;
  int64_t block_size, token_stride, head_offset;
};

// out[r][c0 : c0 + 8 * C] = sum over positions j < n of p[r][j] * v_j for R vectors whose
// probabilities are zero past their own lengths: the value rows are read once for all R.
template <int R, int C, typename T>
LOOMLM_AVX2 void value_tile(const float* const* p, int64_t n, const PagedRows<T>& values, int64_t c0,
                            float* const* out) {
  static_assert(R * C <= 8, "accumulators beyond the register file");
  __m256 acc[R * C];
  for (int i = 0; i < R * C; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t j0 = 0; j0 < n; j0 += values.block_size) {
    const T* base = values.cache +
                        static_cast<int64_t>(values.block_row[j0 / values.block_size]) * values.block_size *
                            values.token_stride +
                        values.head_offset + c0;
    const int64_t count = std::min(values.block_size, n - j0);
    for (int64_t i = 0; i < count; ++i) {
      const T* v = base + i * values.token_stride;
      __m256 vs[C];
      for (int c = 0; c < C; ++c) vs[c] = load8(v + 8 * c);
      for (int r = 0; r < R; ++r) {
        const __m256 w = _mm256_set1_ps(p[r][j0 + i]);
        for (int c = 0; c < C; ++c) acc[r * C + c] = _mm256_fmadd_ps(w, vs[c], acc[r * C + c]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) _mm256_storeu_ps(out[r] + c0 + 8 * c, acc[r * C + c]);
}

}  // namespace

int64_t prefill_attention_scratch(int64_t rows, int64_t group, int64_t D, int64_t max_positions) {
  const int64_t padded = (max_positions + kTilePositions - 1) / kTilePositions * kTilePositions;
  return D * padded + rows * group * padded;
}

template <typename T>
LOOMLM_AVX2 void prefill_attention_item(const float* q, int64_t q_row_stride, const T* key_cache,
                                        const T* value_cache, const int32_t* block_row, int64_t seq_len,
                                        int64_t q_len, int64_t row_begin, int64_t row_end, int64_t block_size,
                                        int64_t kv_heads, int64_t kv_head, int64_t group, int64_t D, float scale,
                                        float* scratch, float* out, int64_t out_row_stride) {
  const int64_t first_position = seq_len - q_len;  // the chunk's row r is position first_position + r
  const int64_t positions = first_position + row_end;  // the keys the block's last row sees
  const int64_t padded = (positions + kTilePositions - 1) / kTilePositions * kTilePositions;
  float* kt = scratch;                  // [D][padded]: the keys, transposed
  float* scores = scratch + D * padded;  // [rows * group][padded]
  const int64_t token_stride = kv_heads * D;
  auto row = [&](const T* cache, int64_t pos) {
    const int64_t slot = static_cast<int64_t>(block_row[pos / block_size]) * block_size + pos % block_size;
    return cache + slot * token_stride + kv_head * D;
  };
  for (int64_t pos = 0; pos < positions; ++pos) {
    const T* k = row(key_cache, pos);
    for (int64_t d = 0; d < D; ++d) kt[d * padded + pos] = load1(k + d);
  }
  for (int64_t d = 0; d < D; ++d) std::fill(kt + d * padded + positions, kt + (d + 1) * padded, 0.f);

  // Query vectors in (row, head) order: a tile's vectors see nondecreasing numbers of keys.
  const int64_t num_vectors = (row_end - row_begin) * group;
  auto query = [&](int64_t v) { return q + (row_begin + v / group) * q_row_stride + (v % group) * D; };
  auto visible = [&](int64_t v) { return first_position + row_begin + v / group + 1; };
  for (int64_t v0 = 0; v0 < num_vectors; v0 += kTileVectors) {
    const int R = static_cast<int>(std::min<int64_t>(kTileVectors, num_vectors - v0));
    const float* qs[kTileVectors];
    float* rows_out[kTileVectors];
    for (int r = 0; r < R; ++r) qs[r] = query(v0 + r), rows_out[r] = scores + (v0 + r) * padded;
    const int64_t last = visible(v0 + R - 1);
    for (int64_t j0 = 0; j0 < last; j0 += kTilePositions) {
      switch (R) {
        case 4: score_tile<4>(qs, kt, padded, D, scale, rows_out, j0); break;
        case 3: score_tile<3>(qs, kt, padded, D, scale, rows_out, j0); break;
        case 2: score_tile<2>(qs, kt, padded, D, scale, rows_out, j0); break;
        default: score_tile<1>(qs, kt, padded, D, scale, rows_out, j0); break;
      }
    }
  }
  const PagedRows<T> values{value_cache, block_row, block_size, token_stride, kv_head * D};
  for (int64_t v = 0; v < num_vectors; ++v) {
    float* p = scores + v * padded;
    const int64_t n = visible(v);
    softmax(p, n);
    std::fill(p + n, p + padded, 0.f);  // a value tile runs to its last vector's length
  }
  for (int64_t v0 = 0; v0 < num_vectors; v0 += kTileVectors) {
    const int R = static_cast<int>(std::min<int64_t>(kTileVectors, num_vectors - v0));
    const float* ps[kTileVectors];
    float* outs[kTileVectors];
    for (int r = 0; r < R; ++r) {
      ps[r] = scores + (v0 + r) * padded;
      outs[r] = out + (row_begin + (v0 + r) / group) * out_row_stride + ((v0 + r) % group) * D;
    }
    const int64_t n = visible(v0 + R - 1);
    for (int64_t c0 = 0; c0 < D; c0 += 16) {
      const bool pair = c0 + 16 <= D;  // D is a multiple of 8: the last block may be 8 wide
      switch (R * 2 + (pair ? 1 : 0)) {
        case 9: value_tile<4, 2, T>(ps, n, values, c0, outs); break;
        case 8: value_tile<4, 1, T>(ps, n, values, c0, outs); break;
        case 7: value_tile<3, 2, T>(ps, n, values, c0, outs); break;
        case 6: value_tile<3, 1, T>(ps, n, values, c0, outs); break;
        case 5: value_tile<2, 2, T>(ps, n, values, c0, outs); break;
        case 4: value_tile<2, 1, T>(ps, n, values, c0, outs); break;
        case 3: value_tile<1, 2, T>(ps, n, values, c0, outs); break;
        default: value_tile<1, 1, T>(ps, n, values, c0, outs); break;
      }
    }
  }
}

template void prefill_attention_item<float>(const float*, int64_t, const float*, const float*, const int32_t*, int64_t,
                                            int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                            float, float*, float*, int64_t);
template void prefill_attention_item<uint16_t>(const float*, int64_t, const uint16_t*, const uint16_t*, const int32_t*,
                                               int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                               int64_t, float, float*, float*, int64_t);

}  // namespace loomlm::avx2
