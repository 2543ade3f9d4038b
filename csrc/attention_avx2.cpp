// Single-query (decode) attention over the paged KV cache on AVX2 CPUs, for a range of kv heads of
// one sequence: the three passes of model_ops.cpp's portable decode_attention_item (scores, float32
// softmax, weighted sum of values) with the vector code written out. The cache holds float32 or
// bfloat16 (a template over the element; a bfloat16 widens exactly as it loads, the arithmetic is
// float32 either way).
//
// Decode attention streams the cache from memory, so the layout of the reads decides its speed. The
// previous kernel ran one kv head per call: 256 of every 768-byte key row, then the value rows once
// per query head, each position's products summed horizontally. It read 6-10 GB/s where a plain
// sequential read of the same rows reads ~23 (Zen 3, 2 threads, 64 sequences x 100 tokens). Here a
// call reads whole rows (every kv head of a position at once), keys in position order, values in
// runs of 16 positions that every head reads while they sit in L1. Before the arithmetic reaches a
// stretch of rows, one independent load per cache line brings them in: the core keeps many of those
// in flight, the arithmetic's own (dependent) loads few. And while a thread computes one item, it
// prefetches its next item's rows into L2, a run at a time beside the run it computes (the next
// item's rows at the same positions), so the next item's reads overlap this one's arithmetic: a burst
// of prefetches for the whole item up front stalled the core on its miss buffers instead (32
// sequences x 80 positions, 30 layers, Zen 4: 5.7 ms a step with the burst, 4.8 interleaved). Sums sit
// in registers: scores in tiles of 4 positions x 3 query heads reduced by horizontal adds, values in
// tiles of 3 query heads x 32 floats.
#include "attention_avx2.h"

#include <type_traits>

#include "model_ops.h"

namespace loomlm::avx2 {
namespace {

constexpr int64_t kTouchRows = 128;  // rows brought in ahead at a time (96 KB of SmolLM2's rows: L2)
constexpr int64_t kValueRun = 16;    // positions whose value rows every head reads in turn (L1)

// dst[0:P] = scale * (the sum of the eight lanes of each of p0..p3).
template <int P>
LOOMLM_AVX2 inline void reduce4(__m256 p0, __m256 p1, __m256 p2, __m256 p3, float scale, float* dst) {
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(p0, p1), _mm256_hadd_ps(p2, p3));
  const __m128 sum =
      _mm_mul_ps(_mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)), _mm_set1_ps(scale));
  if constexpr (P == 4) {
    _mm_storeu_ps(dst, sum);
  } else {
    alignas(16) float lane[4];
    _mm_store_ps(lane, sum);
    for (int i = 0; i < P; ++i) dst[i] = lane[i];
  }
}

// s[g * s_stride + i] = scale * q_g . k[i] for G <= 3 query heads (D floats apart) and P <= 4 keys.
template <int G, int P, typename T>
LOOMLM_AVX2 inline void score_tile(const float* q, int64_t D, const T* const* k, float scale, float* s,
                                   int64_t s_stride) {
  __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00,
         a20 = a00, a21 = a00, a22 = a00, a23 = a00;
  for (int64_t d = 0; d < D; d += 8) {
    const __m256 q0 = _mm256_loadu_ps(q + d);
    const __m256 q1 = G > 1 ? _mm256_loadu_ps(q + D + d) : q0;
    const __m256 q2 = G > 2 ? _mm256_loadu_ps(q + 2 * D + d) : q0;
#define LOOMLM_KEY(p)                                              \
  if constexpr (P > p) {                                           \
    const __m256 key = load8(k[p] + d);                             \
    a0##p = _mm256_fmadd_ps(q0, key, a0##p);                       \
    if constexpr (G > 1) a1##p = _mm256_fmadd_ps(q1, key, a1##p);  \
    if constexpr (G > 2) a2##p = _mm256_fmadd_ps(q2, key, a2##p);  \
  }
    LOOMLM_KEY(0) LOOMLM_KEY(1) LOOMLM_KEY(2) LOOMLM_KEY(3)
#undef LOOMLM_KEY
  }
  reduce4<P>(a00, a01, a02, a03, scale, s);
  if constexpr (G > 1) reduce4<P>(a10, a11, a12, a13, scale, s + s_stride);
  if constexpr (G > 2) reduce4<P>(a20, a21, a22, a23, scale, s + 2 * s_stride);
}

// o[g * D + c0 : + 8 C] += sum over the n rows of p[g * p_stride + i] * v[i][c0 : + 8 C], G <= 3
// heads, C <= 4 vectors; the sums stay in registers over the rows.
template <int G, int C, typename T>
LOOMLM_AVX2 inline void value_tile(const float* p, int64_t p_stride, const T* const* v, int64_t n, int64_t c0,
                                   float* o, int64_t D) {
  __m256 a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23;
  a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = a20 = a21 = a22 = a23 = _mm256_setzero_ps();
#define LOOMLM_SUMS(X) X(0, 0) X(0, 1) X(0, 2) X(0, 3) X(1, 0) X(1, 1) X(1, 2) X(1, 3) X(2, 0) X(2, 1) X(2, 2) X(2, 3)
#define LOOMLM_LOAD(g, c) \
  if constexpr (G > g && C > c) a##g##c = _mm256_loadu_ps(o + g * D + c0 + 8 * c);
#define LOOMLM_STORE(g, c) \
  if constexpr (G > g && C > c) _mm256_storeu_ps(o + g * D + c0 + 8 * c, a##g##c);
  LOOMLM_SUMS(LOOMLM_LOAD)
  for (int64_t i = 0; i < n; ++i) {
    const T* row = v[i] + c0;
    const __m256 w0 = _mm256_broadcast_ss(p + i);
    const __m256 w1 = G > 1 ? _mm256_broadcast_ss(p + p_stride + i) : w0;
    const __m256 w2 = G > 2 ? _mm256_broadcast_ss(p + 2 * p_stride + i) : w0;
#define LOOMLM_VALUE(c)                                        \
  if constexpr (C > c) {                                       \
    const __m256 x = load8(row + 8 * c);                        \
    a0##c = _mm256_fmadd_ps(w0, x, a0##c);                     \
    if constexpr (G > 1) a1##c = _mm256_fmadd_ps(w1, x, a1##c); \
    if constexpr (G > 2) a2##c = _mm256_fmadd_ps(w2, x, a2##c); \
  }
    LOOMLM_VALUE(0) LOOMLM_VALUE(1) LOOMLM_VALUE(2) LOOMLM_VALUE(3)
#undef LOOMLM_VALUE
  }
  LOOMLM_SUMS(LOOMLM_STORE)
#undef LOOMLM_STORE
#undef LOOMLM_LOAD
#undef LOOMLM_SUMS
}

template <int G, typename T>
LOOMLM_AVX2 void score_rows(const float* q, int64_t D, const T* const* k, int64_t n, float scale, float* s,
                            int64_t s_stride) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) score_tile<G, 4, T>(q, D, k + i, scale, s + i, s_stride);
  switch (n - i) {
    case 3: score_tile<G, 3, T>(q, D, k + i, scale, s + i, s_stride); break;
    case 2: score_tile<G, 2, T>(q, D, k + i, scale, s + i, s_stride); break;
    case 1: score_tile<G, 1, T>(q, D, k + i, scale, s + i, s_stride); break;
    default: break;
  }
}

template <int G, typename T>
LOOMLM_AVX2 void value_rows(const float* p, int64_t p_stride, const T* const* v, int64_t n, float* o, int64_t D) {
  const int64_t chunks = D / 8;
  int64_t c = 0;
  for (; c + 4 <= chunks; c += 4) value_tile<G, 4, T>(p, p_stride, v, n, 8 * c, o, D);
  switch (chunks - c) {
    case 3: value_tile<G, 3, T>(p, p_stride, v, n, 8 * c, o, D); break;
    case 2: value_tile<G, 2, T>(p, p_stride, v, n, 8 * c, o, D); break;
    case 1: value_tile<G, 1, T>(p, p_stride, v, n, 8 * c, o, D); break;
    default: break;
  }
}

// f(first head, std::integral_constant<int, G>) for the group's query heads in threes (the last
// call takes the one or two left over).
template <typename F>
inline void heads_by_three(int64_t group, F f) {
  int64_t g = 0;
  for (; g + 3 <= group; g += 3) f(g, std::integral_constant<int, 3>{});
  if (group - g == 2) f(g, std::integral_constant<int, 2>{});
  if (group - g == 1) f(g, std::integral_constant<int, 1>{});
}

LOOMLM_AVX2 inline __m256 first_float(const char* p) { return _mm256_broadcast_ss(reinterpret_cast<const float*>(p)); }

// One load per 64-byte line of each row (span elements): independent loads, so the rows stream in;
// four sinks, so the loads do not wait on one chain of ors.
template <typename T>
LOOMLM_AVX2 void touch_rows(const T* const* rows, int64_t n, int64_t span) {
  const int64_t bytes = span * static_cast<int64_t>(sizeof(T));
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (int64_t i = 0; i < n; ++i) {
    const char* row = reinterpret_cast<const char*>(rows[i]);
    int64_t b = 0;
    for (; b + 256 <= bytes; b += 256) {
      s0 = _mm256_or_ps(s0, first_float(row + b));
      s1 = _mm256_or_ps(s1, first_float(row + b + 64));
      s2 = _mm256_or_ps(s2, first_float(row + b + 128));
      s3 = _mm256_or_ps(s3, first_float(row + b + 192));
    }
    for (; b < bytes; b += 64) s0 = _mm256_or_ps(s0, first_float(row + b));
  }
  asm volatile("" : : "x"(s0), "x"(s1), "x"(s2), "x"(s3));
}

// rows[i] = the cache row of position pos0 + i, head_offset elements in, for i < n: one division a
// block, not one a position.
template <typename T>
inline void cache_rows(const T* cache, const int32_t* block_row, int64_t pos0, int64_t n, int64_t block_size,
                       int64_t token_stride, int64_t head_offset, const T** rows) {
  for (int64_t i = 0; i < n;) {
    const int64_t pos = pos0 + i, offset = pos % block_size, count = std::min(block_size - offset, n - i);
    const T* row =
        cache + (static_cast<int64_t>(block_row[pos / block_size]) * block_size + offset) * token_stride + head_offset;
    for (int64_t j = 0; j < count; ++j) rows[i + j] = row + j * token_stride;
    i += count;
  }
}

// Every 64-byte line of rows [begin, end) (span elements each) prefetched into L2, without waiting.
template <typename T>
inline void prefetch_rows(const T* const* rows, int64_t begin, int64_t end, int64_t span) {
  const int64_t bytes = span * static_cast<int64_t>(sizeof(T));
  for (int64_t i = begin; i < end; ++i)
    for (int64_t b = 0; b < bytes; b += 64) _mm_prefetch(reinterpret_cast<const char*>(rows[i]) + b, _MM_HINT_T1);
}

}  // namespace

bool attention_supported() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

template <typename T>
LOOMLM_AVX2 void decode_attention_heads(const float* q, const T* key_cache, const T* value_cache,
                                        const int32_t* block_row, int64_t seq_len, int64_t block_size,
                                        int64_t kv_heads, int64_t head_begin, int64_t head_end, int64_t group,
                                        int64_t D, float scale, float* scores, float* out, const UpcomingRows& next) {
  const int64_t token_stride = kv_heads * D, num_kv = head_end - head_begin, span = num_kv * D;
  const int64_t next_len = next.block_row ? next.seq_len : 0;
  const T* rows[kTouchRows];       // this stretch's rows at head_begin
  const T* next_rows[kTouchRows];  // the next item's rows at the same positions, at its first head
  // scores[(h * group + g) * seq_len + pos] for kv head head_begin + h's query head g.
  for (const T* cache : {key_cache, value_cache}) {
    for (int64_t pos0 = 0; pos0 < seq_len; pos0 += kTouchRows) {
      const int64_t n = std::min(kTouchRows, seq_len - pos0), next_n = std::clamp<int64_t>(next_len - pos0, 0, n);
      cache_rows(cache, block_row, pos0, n, block_size, token_stride, head_begin * D, rows);
      cache_rows(cache, next.block_row, pos0, next_n, block_size, token_stride, next.head_begin * D, next_rows);
      touch_rows(rows, n, span);
      const int64_t run = cache == key_cache ? 4 : kValueRun;
      for (int64_t r0 = 0; r0 < n; r0 += run) {
        const int64_t m = std::min(run, n - r0);
        prefetch_rows(next_rows, std::min(r0, next_n), std::min(r0 + m, next_n), span);
        for (int64_t h = 0; h < num_kv; ++h) {
          const T* head_rows[kValueRun];
          for (int64_t i = 0; i < m; ++i) head_rows[i] = rows[r0 + i] + h * D;
          heads_by_three(group, [&](int64_t g, auto G) {
            const int64_t head = h * group + g;
            float* s = scores + head * seq_len + pos0 + r0;
            if (cache == key_cache)
              score_rows<decltype(G)::value, T>(q + ((head_begin + h) * group + g) * D, D, head_rows, m, scale, s,
                                             seq_len);
            else
              value_rows<decltype(G)::value, T>(s, seq_len, head_rows, m, out + ((head_begin + h) * group + g) * D, D);
          });
        }
      }
    }
    for (int64_t pos0 = seq_len; pos0 < next_len; pos0 += kTouchRows) {  // the next item's rows past this one's
      const int64_t n = std::min(kTouchRows, next_len - pos0);
      cache_rows(cache, next.block_row, pos0, n, block_size, token_stride, next.head_begin * D, next_rows);
      prefetch_rows(next_rows, 0, n, span);
    }
    if (cache == key_cache) {
      for (int64_t head = 0; head < num_kv * group; ++head) softmax(scores + head * seq_len, seq_len);
      std::fill(out + head_begin * group * D, out + head_end * group * D, 0.f);
    }
  }
}

template void decode_attention_heads<float>(const float*, const float*, const float*, const int32_t*, int64_t, int64_t,
                                            int64_t, int64_t, int64_t, int64_t, int64_t, float, float*, float*,
                                            const UpcomingRows&);
template void decode_attention_heads<uint16_t>(const float*, const uint16_t*, const uint16_t*, const int32_t*, int64_t,
                                               int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, float*,
                                               float*, const UpcomingRows&);

}  // namespace loomlm::avx2
