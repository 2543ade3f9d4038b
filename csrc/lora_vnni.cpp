// Multi-LoRA on int8 rows with AVX-512 VNNI: vpdpbusd multiplies 4 activation bytes by 4 weight bytes a
// lane, so a tile does 64 multiply-adds an instruction where lora_avx512.cpp's widened int8 did 16 (and
// spent two more instructions widening each 16 weights). Each token's x (and each module's slice of y)
// is quantized to int8 with one scale (nearest even, as the int8 base layers do) and enters as
// unsigned q + 128; the 128 x column sums of the weights come off, computed in the same pass from a
// vector of ones. The layout is lora_ops.h's int8 blocks ([depth][16] bytes); each 4 rows x 16 columns
// (one 64-byte line) become vpdpbusd's column-major order with one dword permute and one byte shuffle.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "lora_ops.h"

namespace loomlm::avx512 {
namespace {

#define LOOMLM_VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vnni")))

constexpr int kTileTokens = 4;   // 16 sums, 4 column sums, 4 weight vectors, 4 broadcasts, 3 constants
constexpr int kTileVectors = 4;  // int8 blocks of 16 columns read at once (4 streams, as lora_avx512.cpp)

// acc += a (unsigned bytes) . w (signed bytes), four products a lane. In asm: GCC 12 kept the
// intrinsic's accumulators in memory (int8_vnni.cpp).
LOOMLM_VNNI inline __m512i dpbusd(__m512i acc, __m512i a, __m512i w) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(w));
  return acc;
}

// Rows 4k..4k+3 of a [depth][16] block (64 bytes; the rows past `live` read as zero) in vpdpbusd's order:
// dword n = column n's four rows. The dword permute gathers each 4-column group's four rows into one
// 128-bit lane; the shuffle transposes each lane's 4 x 4 bytes.
LOOMLM_VNNI inline __m512i quad(const int8_t* p, __mmask64 live) {
  const __m512i by_group = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512i transpose =
      _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
  return _mm512_shuffle_epi8(_mm512_permutexvar_epi32(by_group, _mm512_maskz_loadu_epi8(live, p)), transpose);
}

// Four bytes as one int32 lane (memcpy: the bytes are uint8_t storage, not an int32 object).
inline int32_t four_bytes(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// p[0:16] = (sum - 128 x column sums) * token scale (* scale[0:16] where given), plus p where `add`.
LOOMLM_VNNI inline void store_sum(float* p, __mmask16 mask, __m512i sum, __m512i column_sum, float token_scale,
                                  const float* scale, bool add) {
  __m512 value = _mm512_cvtepi32_ps(_mm512_sub_epi32(sum, _mm512_slli_epi32(column_sum, 7)));
  value = _mm512_mul_ps(value, _mm512_set1_ps(token_scale));
  if (scale) value = _mm512_mul_ps(value, _mm512_maskz_loadu_ps(mask, scale));
  if (add) value = _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, p));
  _mm512_mask_storeu_ps(p, mask, value);
}

// dst[h][0:16V] (+)= the tile's sums over `depth` rows of V blocks (ldw bytes apart) for h < H. Register
// arrays are indexed by pack expansion only, so GCC keeps them in registers (lora_avx512.cpp).
template <int H, int V, int... I, int... C, int... R>
LOOMLM_VNNI __attribute__((noinline)) void tile_body(std::integer_sequence<int, I...>, std::integer_sequence<int, C...>,
                                                     std::integer_sequence<int, R...>, const uint8_t* const* in,
                                                     const float* in_scale, int64_t depth, const int8_t* w,
                                                     int64_t ldw, __mmask16 last, const float* scale,
                                                     float* const* dst, bool add) {
  // I: the H*V sums (token I / V, vector I % V); C: the V vectors; R: the H tokens.
  const uint8_t* const rows[H] = {in[R]...};
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i acc[H * V] = {(I, _mm512_setzero_si512())...};
  __m512i column_sum[V] = {(C, _mm512_setzero_si512())...};
  for (int64_t k = 0; k < depth; k += 4) {
    const __mmask64 live = depth - k >= 4 ? ~__mmask64(0) : (__mmask64(1) << (16 * (depth - k))) - 1;
    const __m512i wv[V] = {quad(w + C * ldw + k * 16, live)...};
    ((column_sum[C] = dpbusd(column_sum[C], ones, wv[C])), ...);
    // Rows k..k+3 of each token's activations (padded with zeros to a multiple of 4) in every lane.
    const __m512i b[H] = {_mm512_set1_epi32(four_bytes(rows[R] + k))...};
    ((acc[I] = dpbusd(acc[I], b[I / V], wv[I % V])), ...);
  }
  (store_sum(dst[I / V] + 16 * (I % V), I % V + 1 == V ? last : __mmask16(0xFFFF), acc[I], column_sum[I % V],
             in_scale[I / V], scale ? scale + 16 * (I % V) : nullptr, add),
   ...);
}

using TileFn = void (*)(const uint8_t* const*, const float*, int64_t, const int8_t*, int64_t, __mmask16,
                        const float*, float* const*, bool);

template <int H, int V>
LOOMLM_VNNI void tile(const uint8_t* const* in, const float* in_scale, int64_t depth, const int8_t* w, int64_t ldw,
                      __mmask16 last, const float* scale, float* const* dst, bool add) {
  tile_body<H, V>(std::make_integer_sequence<int, H * V>(), std::make_integer_sequence<int, V>(),
                  std::make_integer_sequence<int, H>(), in, in_scale, depth, w, ldw, last, scale, dst, add);
}

template <int V, int H>
TileFn tile_with_tokens(int64_t h) {
  if constexpr (H == 1) {
    return tile<1, V>;
  } else {
    return h >= H ? tile<H, V> : tile_with_tokens<V, H - 1>(h);
  }
}

template <int V>
TileFn tile_for(int64_t v, int64_t h) {
  if constexpr (V == 1) {
    return tile_with_tokens<1, kTileTokens>(h);
  } else {
    return v >= V ? tile_with_tokens<V, kTileTokens>(h) : tile_for<V - 1>(v, h);
  }
}

// dst[t][offset : offset + cols] (+)= in[t] . w * in_scale[t] (* scale) for t < count, in blocks of
// kTileVectors x 16 columns; `in` rows hold depth bytes padded to a multiple of 4.
void rows_times_blocks(const uint8_t* const* in, const float* in_scale, int64_t count, int64_t depth,
                       const int8_t* w, int64_t cols, const float* scale, float* const* dst, int64_t offset, bool add) {
  const int64_t ldw = depth * kLoRABlock;
  float* tile_dst[kTileTokens];
  for (int64_t c = 0; c < cols; c += 16 * kTileVectors) {
    const int64_t n = std::min<int64_t>(16 * kTileVectors, cols - c), vectors = (n + 15) / 16;
    const int64_t tail = n - 16 * (vectors - 1);
    const __mmask16 last = tail == 16 ? __mmask16(0xFFFF) : __mmask16((1u << tail) - 1);
    for (int64_t t = 0; t < count; t += kTileTokens) {
      const int64_t h = std::min<int64_t>(kTileTokens, count - t);
      for (int64_t k = 0; k < h; ++k) tile_dst[k] = dst[t + k] + offset + c;
      tile_for<kTileVectors>(vectors, h)(in + t, in_scale + t, depth, w + c / 16 * ldw, ldw, last,
                                         scale ? scale + c : nullptr, tile_dst, add);
    }
  }
}

// q[0:n] = x[0:n] / d + 128 as bytes, d = max |x| / 127 (nearest even: cvtps rounds so under the
// default MXCSR; zeros give d = 0), padded with 128 (zero) to `padded` bytes. Returns d.
LOOMLM_VNNI float quantize(const float* x, int64_t n, int64_t padded, uint8_t* q) {
  const __m512 magnitude = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  auto live = [n](int64_t i) { return n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1); };
  __m512 amax = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    amax = _mm512_max_ps(amax, _mm512_and_ps(_mm512_maskz_loadu_ps(live(i), x + i), magnitude));
  }
  const float d = _mm512_reduce_max_ps(amax) / 127.f;
  const __m512 inverse = _mm512_set1_ps(d != 0.f ? 1.f / d : 0.f);
  const __m512i offset = _mm512_set1_epi32(128);
  for (int64_t i = 0; i < n; i += 16) {
    const __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(live(i), x + i), inverse));
    _mm512_mask_cvtepi32_storeu_epi8(q + i, live(i), _mm512_add_epi32(v, offset));
  }
  std::fill(q + n, q + padded, uint8_t(128));
  return d;
}

}  // namespace

void lora_slot_tokens_vnni(const LoRASlotTokens& s, const int8_t* row, const float* scales, float* y) {
  const int64_t kc = s.num_modules * s.rank, padded = lora_blocks(kc) * kLoRABlock;
  const int64_t in_padded = (s.in + 3) / 4 * 4, rank_padded = (s.rank + 3) / 4 * 4;
  std::vector<uint8_t> xq(s.count * in_padded), yq(s.count * rank_padded);
  std::vector<float> x_scale(s.count), y_scale(s.count);
  std::vector<const uint8_t*> xs(s.count), ys(s.count);
  std::vector<float*> out(s.count), yt(s.count);
  for (int64_t t = 0; t < s.count; ++t) {
    xs[t] = xq.data() + t * in_padded;
    ys[t] = yq.data() + t * rank_padded;
    x_scale[t] = quantize(s.x + s.token_ids[t] * s.x_stride, s.in, in_padded, xq.data() + t * in_padded);
    out[t] = s.out + s.token_ids[t] * s.out_stride;
    yt[t] = y + t * kc;
  }
  // y = (x A^T) * x scale * component scales: A^T's blocks are [in][16] bytes.
  rows_times_blocks(xs.data(), x_scale.data(), s.count, s.in, row, kc, scales, yt.data(), 0, false);
  const int8_t* b = row + padded * s.in;
  for (int64_t m = 0; m < s.num_modules; ++m) {  // out[:, module m] += y_m B_m^T, blocks [rank][16] bytes
    for (int64_t t = 0; t < s.count; ++t) {
      y_scale[t] = quantize(yt[t] + m * s.rank, s.rank, rank_padded, yq.data() + t * rank_padded);
    }
    rows_times_blocks(ys.data(), y_scale.data(), s.count, s.rank, b, s.widths[m], nullptr, out.data(), s.offsets[m],
                      true);
    b += lora_blocks(s.widths[m]) * kLoRABlock * s.rank;
  }
}

}  // namespace loomlm::avx512
