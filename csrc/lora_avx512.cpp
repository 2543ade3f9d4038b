// Multi-LoRA on AVX-512 (lora_ops.h's layouts), any number of tokens, in register tiles of H tokens x V
// vectors of 16 columns. Float32 rows are read where they lie (masked loads at column tails, no gather
// copy); int8 blocks are widened in registers as a tile reads them. A block of columns goes through
// every tile of tokens before the next block: a decode group (a tile or two) streams it once from
// memory, prefetched a few rows ahead, and a prefill chunk's later tiles find it in L2. (int8 rows with
// activations quantized too, on an int8 base: lora_vnni.cpp.)
#include <immintrin.h>

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "lora_ops.h"

namespace loomlm::avx512 {
namespace {

#define LOOMLM_AVX512 __attribute__((target("avx512f")))

// H*V <= 24 accumulators: with the broadcasts and the weight vectors in flight, within 32 zmm. Narrow
// blocks take up to 5 tokens; a block as wide as a whole A^T row (12 vectors: rank 64 x 3 modules)
// takes 2, so a decode group reads A^T front to back: in bench/lora_step.py's decode steps that beat
// blocks of 4 vectors, whose rows stride through memory (15 GB/s where whole rows streamed at 26).
constexpr int kTileTokens = 5;
constexpr int kTileVectors = 12;
constexpr int kTileAccumulators = 24;
constexpr int64_t kExpandVectors = 8;  // B_m^T's rows are wide (a module's width): 8 vectors per block
// int8 blocks lie [depth][16] apart: a tile of V vectors reads V streams at once, and 4 measured faster
// than 12 or 8 in decode steps (13.0 against 16.7 ms with 16 adapters), as fast as 1 or 2.
constexpr int64_t kInt8Vectors = 4;
constexpr int64_t kPrefetchRows = 8;   // rows ahead of a block read from memory

constexpr int max_tile_tokens(int vectors) { return std::min(kTileTokens, kTileAccumulators / vectors); }

// Vector v of row i of a block: float32 rows ldw floats apart (the last vector masked to the block's
// columns), or int8 blocks of 16 columns, ldw bytes apart, widened (zero-padded: no mask needed).
LOOMLM_AVX512 inline __m512 load_weights(const float* w, int64_t i, int v, int64_t ldw, __mmask16 mask) {
  return _mm512_maskz_loadu_ps(mask, w + i * ldw + 16 * v);
}
LOOMLM_AVX512 inline __m512 load_weights(const int8_t* w, int64_t i, int v, int64_t ldw, __mmask16) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + v * ldw + i * 16));
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
}
inline const char* prefetch_address(const float* w, int64_t i, int v, int64_t ldw) {
  return reinterpret_cast<const char*>(w + (i + kPrefetchRows) * ldw + 16 * v);
}
inline const char* prefetch_address(const int8_t* w, int64_t i, int v, int64_t ldw) {
  return reinterpret_cast<const char*>(w + v * ldw + (i + 4 * kPrefetchRows) * 16);
}

// p[0:16] = sum (times scale[0:16] where given), plus p's old values where `add`, on the lanes of `mask`.
LOOMLM_AVX512 inline void store_sum(float* p, __mmask16 mask, __m512 sum, const float* scale, bool add) {
  if (scale) sum = _mm512_mul_ps(sum, _mm512_maskz_loadu_ps(mask, scale));
  if (add) sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask, p));
  _mm512_mask_storeu_ps(p, mask, sum);
}

template <typename W>
using TileFn = void (*)(const float* const*, int64_t, const W*, int64_t, __mmask16, const float*, float* const*,
                        bool);

// dst[h][0:16V] (+)= (in[h][0:depth] . w[0:depth][0:16V]) * scale for h < H; `last` masks the block's
// last vector. Every register array is indexed by pack expansion, never by a loop counter: GCC 12 then
// keeps the sums in registers (with loops it also stored all of them to the stack on every step, at
// half the speed). Not inlined: one body per shape.
template <typename W, int H, int V, bool kPrefetch, int... I, int... C, int... R>
LOOMLM_AVX512 __attribute__((noinline)) void tile_body(std::integer_sequence<int, I...>,
                                                       std::integer_sequence<int, C...>,
                                                       std::integer_sequence<int, R...>, const float* const* in,
                                                       int64_t depth, const W* w, int64_t ldw, __mmask16 last,
                                                       const float* scale, float* const* dst, bool add) {
  // I: the H*V accumulators (token I / V, vector I % V); C: the V vectors; R: the H tokens.
  const float* const rows[H] = {in[R]...};
  __m512 acc[H * V] = {(I, _mm512_setzero_ps())...};
  for (int64_t i = 0; i < depth; ++i) {
    // int8 rows are 16 bytes: one prefetch per cache line of each block.
    if constexpr (kPrefetch) {
      if (std::is_same_v<W, float> || (i & 3) == 0) (_mm_prefetch(prefetch_address(w, i, C, ldw), _MM_HINT_T0), ...);
    }
    const __m512 wv[V] = {load_weights(w, i, C, ldw, C + 1 < V ? __mmask16(0xFFFF) : last)...};
    const __m512 b[H] = {_mm512_set1_ps(rows[R][i])...};
    ((acc[I] = _mm512_fmadd_ps(b[I / V], wv[I % V], acc[I])), ...);
  }
  (store_sum(dst[I / V] + 16 * (I % V), I % V + 1 == V ? last : __mmask16(0xFFFF), acc[I],
             scale ? scale + 16 * (I % V) : nullptr, add),
   ...);
}

template <typename W, int H, int V, bool kPrefetch>
LOOMLM_AVX512 void tile(const float* const* in, int64_t depth, const W* w, int64_t ldw, __mmask16 last,
                        const float* scale, float* const* dst, bool add) {
  tile_body<W, H, V, kPrefetch>(std::make_integer_sequence<int, H * V>(), std::make_integer_sequence<int, V>(),
                                std::make_integer_sequence<int, H>(), in, depth, w, ldw, last, scale, dst, add);
}

template <typename W, bool P, int V, int H>
TileFn<W> tile_with_tokens(int64_t h) {
  if constexpr (H == 1) {
    return tile<W, 1, V, P>;
  } else {
    return h >= H ? tile<W, H, V, P> : tile_with_tokens<W, P, V, H - 1>(h);
  }
}

template <typename W, bool P, int V>
TileFn<W> tile_with_vectors(int64_t v, int64_t h) {
  if constexpr (V == 1) {
    return tile_with_tokens<W, P, 1, max_tile_tokens(1)>(h);
  } else {
    return v >= V ? tile_with_tokens<W, P, V, max_tile_tokens(V)>(h) : tile_with_vectors<W, P, V - 1>(v, h);
  }
}

// The tile of `vectors` x 16 columns and `tokens` <= max_tile_tokens(vectors) tokens.
template <typename W>
TileFn<W> tile_for(bool prefetch, int64_t vectors, int64_t tokens) {
  return prefetch ? tile_with_vectors<W, true, kTileVectors>(vectors, tokens)
                  : tile_with_vectors<W, false, kTileVectors>(vectors, tokens);
}

// Where the block of columns from `c` starts: float32 rows at column c, int8 at block c / 16.
inline const float* block_start(const float* w, int64_t c, int64_t) { return w + c; }
inline const int8_t* block_start(const int8_t* w, int64_t c, int64_t ldw) { return w + c / 16 * ldw; }

// dst[t][offset : offset + cols] (+)= (in[t][0:depth] . w[0:depth][0:cols]) * scale[0:cols] for t < count,
// in blocks of `block_vectors` x 16 columns (scale: nullptr for none).
template <typename W>
void rows_times_weights(const float* const* in, int64_t count, int64_t depth, const W* w, int64_t ldw,
                        int64_t cols, int64_t block_vectors, const float* scale, float* const* dst, int64_t offset,
                        bool add) {
  float* tile_dst[kTileTokens];
  for (int64_t c = 0; c < cols; c += 16 * block_vectors) {
    const int64_t n = std::min(16 * block_vectors, cols - c), vectors = (n + 15) / 16, tail = n - 16 * (vectors - 1);
    const __mmask16 last = tail == 16 ? __mmask16(0xFFFF) : __mmask16((1u << tail) - 1);
    const int64_t tokens = max_tile_tokens(int(vectors));
    for (int64_t t = 0; t < count; t += tokens) {
      const int64_t h = std::min(tokens, count - t);
      for (int64_t k = 0; k < h; ++k) tile_dst[k] = dst[t + k] + offset + c;
      if (add) {  // the next tile's rows of dst, read after this tile's sums: from memory in a prefill chunk
        for (int64_t k = t + tokens; k < std::min(count, t + 2 * tokens); ++k)
          for (int64_t v = 0; v < vectors; ++v)
            _mm_prefetch(reinterpret_cast<const char*>(dst[k] + offset + c + 16 * v), _MM_HINT_T0);
      }
      // The block's first tile reads it from memory: prefetch. Later tiles find it in L2.
      tile_for<W>(t == 0, vectors, h)(in + t, depth, block_start(w, c, ldw), ldw, last, scale ? scale + c : nullptr,
                                      tile_dst, add);
    }
  }
}

// Pointers to the slot's tokens' rows of x and out, and to rows of y (kc floats each).
struct TokenRows {
  std::vector<const float*> x, ym;
  std::vector<float*> out, y;
  TokenRows(const LoRASlotTokens& s, float* scratch, int64_t kc) : x(s.count), ym(s.count), out(s.count), y(s.count) {
    for (int64_t t = 0; t < s.count; ++t) {
      x[t] = s.x + s.token_ids[t] * s.x_stride;
      out[t] = s.out + s.token_ids[t] * s.out_stride;
      y[t] = scratch + t * kc;
    }
  }
  const float* const* module_y(int64_t m, int64_t rank) {  // y's columns of module m
    for (size_t t = 0; t < y.size(); ++t) ym[t] = y[t] + m * rank;
    return ym.data();
  }
};

}  // namespace

void lora_slot_tokens(const LoRASlotTokens& s, const float* row, float* y) {
  const int64_t kc = s.num_modules * s.rank;
  TokenRows rows(s, y, kc);
  rows_times_weights(rows.x.data(), s.count, s.in, row, kc, kc, kTileVectors, nullptr, rows.y.data(), 0, false);
  const float* b = row + s.in * kc;
  for (int64_t m = 0; m < s.num_modules; ++m) {  // out[:, module m] += y_m B_m^T
    rows_times_weights(rows.module_y(m, s.rank), s.count, s.rank, b, s.widths[m], s.widths[m], kExpandVectors,
                       nullptr, rows.out.data(), s.offsets[m], true);
    b += s.rank * s.widths[m];
  }
}

void lora_slot_tokens_int8(const LoRASlotTokens& s, const int8_t* row, const float* scales, float* y) {
  const int64_t kc = s.num_modules * s.rank, padded = lora_blocks(kc) * kLoRABlock;
  TokenRows rows(s, y, kc);
  // y = (x A^T) * scales: A^T's blocks are [in][16] bytes.
  rows_times_weights(rows.x.data(), s.count, s.in, row, s.in * kLoRABlock, kc, kInt8Vectors, scales, rows.y.data(), 0,
                     false);
  const int8_t* b = row + padded * s.in;
  for (int64_t m = 0; m < s.num_modules; ++m) {  // out[:, module m] += y_m B_m^T, blocks [rank][16] bytes
    rows_times_weights(rows.module_y(m, s.rank), s.count, s.rank, b, s.rank * kLoRABlock, s.widths[m],
                       kInt8Vectors, nullptr, rows.out.data(), s.offsets[m], true);
    b += lora_blocks(s.widths[m]) * kLoRABlock * s.rank;
  }
}

}  // namespace loomlm::avx512
