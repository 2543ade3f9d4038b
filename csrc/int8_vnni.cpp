// The int8 per-channel layer's sums with AVX-512 VNNI: vpdpbusd multiplies unsigned by signed bytes and
// adds each four products into an int32 lane (4x the multiply-adds of a float32 FMA per instruction).
// The activations are signed, so the kernel feeds a + 128 (one xor per 64 bytes) and takes 128 x the
// weight row's sum back off, that sum computed by the same instruction on a vector of 128s: every
// sum stays exact, equal to oneDNN's and the scalar loop's.
//
// Weights are read in the layer's own [N, K] layout (no second copy), 64 bytes a step. A tile is 4
// output columns x up to 4 rows: each weight load serves every row, each activation load the 4
// columns, and the 16-lane partial sums of 4 columns fold into one 4-lane vector at the end. With at
// most 4 rows (decoding) one pass computes the weight sums too and prefetches the stream ahead, since
// the weights then come from DRAM once; with more, a short pass per column quad computes the sums
// and leaves the 4 rows in L1 for the row tiles, in row blocks whose activations stay in L2.
#include <immintrin.h>

#include <algorithm>

#include "quant_isa.h"

namespace loomlm::avx512 {
namespace {

#define LOOMLM_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq")))

constexpr int kCols = 4;
constexpr int kTileRows = 4;  // 16 accumulators: GCC spilled them to the stack at 5 and 6 rows (half the speed)
constexpr int64_t kRowBlock = 96;
// Weight rows ahead (4 quads), into L2: the T0 hint (into L1) streamed 11-18 GB/s at one row against
// 26-32 GB/s for T1 (all the model's layers in turn, weights from DRAM; AMD Zen 4).
constexpr int64_t kPrefetchRows = 16;

LOOMLM_VNNI inline __mmask64 live_bytes(int64_t K, int64_t k) {
  return K - k >= 64 ? ~__mmask64{0} : (__mmask64{1} << (K - k)) - 1;
}

// acc += a (unsigned bytes) . w (signed bytes), four products a lane. In asm because GCC 12 compiled the
// intrinsic in a loop of 16 accumulators into a register copy per instruction and stack spills (the
// intrinsic's result is a new value; the instruction updates its accumulator in place).
LOOMLM_VNNI inline void dpbusd(__m512i& acc, __m512i a, __m512i w) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(w));
}

// Lane i of the result: the sum of the 16 lanes of the i-th argument.
LOOMLM_VNNI inline __m128i sum4(__m512i a, __m512i b, __m512i c, __m512i d) {
  const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
  const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
  const __m512i abcd = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
  const __m256i half = _mm256_add_epi32(_mm512_castsi512_si256(abcd), _mm512_extracti64x4_epi64(abcd, 1));
  return _mm_add_epi32(_mm256_castsi256_si128(half), _mm256_extracti128_si256(half, 1));
}

// Row m, columns n0 .. n0+cols-1: float(sum) * x_scale[m] * w_scale[n] (+ bias[n]), the epilogue's order.
LOOMLM_VNNI inline void store(__m128i sums, const Int8Epilogue& e, int64_t m, int64_t n0, int64_t N, int cols) {
  const __mmask8 live = static_cast<__mmask8>((1u << cols) - 1);
  __m128 y = _mm_mul_ps(_mm_mul_ps(_mm_cvtepi32_ps(sums), _mm_set1_ps(e.x_scale[m])),
                        _mm_maskz_loadu_ps(live, e.w_scale + n0));
  if (e.bias) y = _mm_add_ps(y, _mm_maskz_loadu_ps(live, e.bias + n0));
  _mm_mask_storeu_ps(e.out + m * N + n0, live, y);
}

struct Columns {
  const int8_t* row[kCols];  // past the quad's real columns: the last one again (never stored)
  int count;
};

// 128 x each column's weight sum, from one pass over the 4 rows.
LOOMLM_VNNI __m128i weight_sums_128(const Columns& c, int64_t K) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512i s[kCols];
  for (int i = 0; i < kCols; ++i) s[i] = _mm512_setzero_si512();
  for (int64_t k = 0; k < K; k += 64) {
    const __mmask64 live = live_bytes(K, k);
    for (int i = 0; i < kCols; ++i) {
      dpbusd(s[i], flip, _mm512_maskz_loadu_epi8(live, c.row[i] + k));
      _mm_prefetch(reinterpret_cast<const char*>(c.row[i] + kPrefetchRows * K + k), _MM_HINT_T1);
    }
  }
  return sum4(s[0], s[1], s[2], s[3]);
}

// Rows m0 .. m0+MT-1 of the quad. kSums: the weight sums come from this same pass (and the weight
// stream is prefetched: decoding, the rows come from DRAM); else `sums_128` holds them already. The
// sums are named locals, not an array: GCC kept an array of vectors in memory, a store per vpdpbusd.
template <int MT, bool kSums>
// Not inlined: inside int8_rows GCC spilled the accumulators again.
__attribute__((noinline)) LOOMLM_VNNI void tile(const int8_t* xq, int64_t m0, int64_t K, const Columns& c,
                                                __m128i sums_128, int64_t n0, int64_t N, const Int8Epilogue& e) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i zero = _mm512_setzero_si512();
  __m512i s0 = zero, s1 = zero, s2 = zero, s3 = zero;
#define LOOMLM_ACC(r) __m512i a##r##0 = zero, a##r##1 = zero, a##r##2 = zero, a##r##3 = zero;
  LOOMLM_ACC(0) LOOMLM_ACC(1) LOOMLM_ACC(2) LOOMLM_ACC(3)
#undef LOOMLM_ACC
  const int8_t* x = xq + m0 * K;
  // Whole 64-byte steps with plain loads, then a masked tail (masked-off bytes: 0 ^ 0x80 = 128 times
  // a zero weight byte).
#define LOOMLM_ROW(r, LOAD)                                                                          \
  if constexpr (MT > r) {                                                                            \
    const __m512i a = _mm512_xor_si512(LOAD(x + r * K + k), flip);                                   \
    dpbusd(a##r##0, a, w0), dpbusd(a##r##1, a, w1), dpbusd(a##r##2, a, w2), dpbusd(a##r##3, a, w3); \
  }
#define LOOMLM_STEP(LOAD)                                                                              \
  {                                                                                                    \
    const __m512i w0 = LOAD(c.row[0] + k), w1 = LOAD(c.row[1] + k), w2 = LOAD(c.row[2] + k),            \
                  w3 = LOAD(c.row[3] + k);                                                             \
    if constexpr (kSums) {                                                                             \
      dpbusd(s0, flip, w0), dpbusd(s1, flip, w1), dpbusd(s2, flip, w2), dpbusd(s3, flip, w3);          \
      for (int i = 0; i < kCols; ++i)                                                                  \
        _mm_prefetch(reinterpret_cast<const char*>(c.row[i] + kPrefetchRows * K + k), _MM_HINT_T1);    \
    }                                                                                                  \
    LOOMLM_ROW(0, LOAD) LOOMLM_ROW(1, LOAD) LOOMLM_ROW(2, LOAD) LOOMLM_ROW(3, LOAD)                    \
  }
#define LOOMLM_WHOLE(p) _mm512_loadu_si512(p)
#define LOOMLM_MASKED(p) _mm512_maskz_loadu_epi8(live, p)
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) LOOMLM_STEP(LOOMLM_WHOLE)
  if (k < K) {
    const __mmask64 live = live_bytes(K, k);
    LOOMLM_STEP(LOOMLM_MASKED)
  }
#undef LOOMLM_MASKED
#undef LOOMLM_WHOLE
#undef LOOMLM_STEP
#undef LOOMLM_ROW
  if constexpr (kSums) sums_128 = sum4(s0, s1, s2, s3);
#define LOOMLM_STORE(r)                                                                                \
  if constexpr (MT > r)                                                                                \
    store(_mm_sub_epi32(sum4(a##r##0, a##r##1, a##r##2, a##r##3), sums_128), e, m0 + r, n0, N, c.count);
  LOOMLM_STORE(0) LOOMLM_STORE(1) LOOMLM_STORE(2) LOOMLM_STORE(3)
#undef LOOMLM_STORE
}

template <int MT>
LOOMLM_VNNI void rest_tile(const int8_t* xq, int64_t m0, int64_t K, const Columns& c, __m128i sums_128, int64_t n0,
                           int64_t N, const Int8Epilogue& e, int rows) {
  if constexpr (MT > 0) {
    if (rows == MT) return tile<MT, false>(xq, m0, K, c, sums_128, n0, N, e);
    rest_tile<MT - 1>(xq, m0, K, c, sums_128, n0, N, e, rows);
  }
}

LOOMLM_VNNI void decode_tile(const int8_t* xq, int64_t rows, int64_t K, const Columns& c, int64_t n0, int64_t N,
                             const Int8Epilogue& e) {
  const __m128i none = _mm_setzero_si128();
  switch (rows) {
    case 1: return tile<1, true>(xq, 0, K, c, none, n0, N, e);
    case 2: return tile<2, true>(xq, 0, K, c, none, n0, N, e);
    case 3: return tile<3, true>(xq, 0, K, c, none, n0, N, e);
    default: return tile<4, true>(xq, 0, K, c, none, n0, N, e);
  }
}

}  // namespace

LOOMLM_VNNI void int8_rows(const int8_t* xq, int64_t rows, int64_t K, const int8_t* w, int64_t N, int64_t n_begin,
                           int64_t n_end, const Int8Epilogue& epilogue) {
  const auto quad = [&](int64_t n0) {
    Columns c;
    c.count = static_cast<int>(std::min<int64_t>(kCols, n_end - n0));
    for (int i = 0; i < kCols; ++i) c.row[i] = w + (n0 + std::min(i, c.count - 1)) * K;
    return c;
  };
  if (rows <= kCols) {
    for (int64_t n0 = n_begin; n0 < n_end; n0 += kCols) decode_tile(xq, rows, K, quad(n0), n0, N, epilogue);
    return;
  }
  for (int64_t m_block = 0; m_block < rows; m_block += kRowBlock) {
    const int64_t m_end = std::min(rows, m_block + kRowBlock);
    for (int64_t n0 = n_begin; n0 < n_end; n0 += kCols) {
      const Columns c = quad(n0);
      const __m128i sums_128 = weight_sums_128(c, K);
      int64_t m = m_block;
      for (; m + kTileRows <= m_end; m += kTileRows) tile<kTileRows, false>(xq, m, K, c, sums_128, n0, N, epilogue);
      if (m < m_end) rest_tile<kTileRows - 1>(xq, m, K, c, sums_128, n0, N, epilogue, static_cast<int>(m_end - m));
    }
  }
}

}  // namespace loomlm::avx512
