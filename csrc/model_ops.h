// The float32 per-layer ops of a CPU step that torch runs as several small ops each: RMSNorm (with
// the residual add folded in), rotary embedding with the KV-cache write, SiLU-and-multiply, and
// attention for single-query (decode) rows read straight from the paged cache. Raw pointers; the
// torch-facing checks and threading are in ops.cpp, the torch references in
// loomlm/kernels/cpu_ops.py.
#pragma once

#include <cstdint>

namespace loomlm {

// out[t] = weight * x[t] / sqrt(mean(x[t]^2) + eps), rows [begin, end). With `residual`:
// residual[t] += x[t] first, and the sum is normalised (the pre-norm transformer's add + norm).
void rms_norm_rows(const float* x, int64_t x_stride, float* residual, const float* weight, float eps, int64_t D,
                   int64_t begin, int64_t end, float* out);

// The key and value caches ([slots, kv_heads * D] contiguous) a step writes: float32, or bfloat16
// (uint16_t bits; rounded to nearest even, as torch rounds).
struct CacheRows {
  void* key;
  void* value;
  bool bf16;
};

// In place on rows [begin, end) of qkv ([T, stride], heads of D floats): the first `rot_heads`
// heads rotated by (cos, sin) [T, D] (rotate-half form); then heads [k_head, k_head + kv_heads)
// (keys, rotated) and the next kv_heads (values) written to slot slots[t] of the caches; slots < 0
// are skipped.
void rotary_store_rows(float* qkv, int64_t stride, int64_t rot_heads, int64_t D, const float* cos, const float* sin,
                       int64_t k_head, int64_t kv_heads, const int64_t* slots, const CacheRows& cache, int64_t begin,
                       int64_t end);

// out[t, i] = silu(gate_up[t, i]) * gate_up[t, I + i], rows [begin, end).
void silu_mul_rows(const float* gate_up, int64_t I, int64_t begin, int64_t end, float* out);

// int8 linear layers (per-channel weights, per-token activations; loomlm/engine/models/quantized.py):
// rows [begin, end) of x, times `inv_smooth` when given, quantized with one scale per row,
// q = round(y / s), s = max(max|y| , 1e-12) / 127; and the int32 products rescaled,
// out = float(acc) * x_scale[t] * w_scale[n] (+ bias[n]). The same float operations, in the same
// order, as the torch layer: the results are identical.
void int8_quantize_rows(const float* x, int64_t x_stride, const float* inv_smooth, int64_t K, int64_t begin,
                        int64_t end, int8_t* q, float* scale);
void int8_dequantize_rows(const int32_t* acc, const float* x_scale, const float* w_scale, const float* bias, int64_t N,
                          int64_t begin, int64_t end, float* out);

// One (sequence, kv head) of decode attention: the `group` query heads at `q` (D floats apart)
// over the sequence's `seq_len` keys, read through its block table. Caches are
// [num_blocks, block_size, kv_heads, D] contiguous. `scores`: scratch of group * seq_len floats.
void decode_attention_item(const float* q, const float* key_cache, const float* value_cache, const int32_t* block_row,
                           int64_t seq_len, int64_t block_size, int64_t kv_heads, int64_t kv_head, int64_t group,
                           int64_t D, float scale, float* scores, float* out);

namespace avx2 {
// AVX2 decode attention (attention_avx2.cpp; D a multiple of 8, CPUs with AVX2 and FMA): kv heads
// [head_begin, head_end) of one sequence at once, whole cache rows streamed. q and out: the
// sequence's row ([heads, D], head 0 first). scores: scratch of (head_end - head_begin) * group *
// seq_len floats.
bool attention_supported();
// The rows a thread reads after the current item (its next item's sequence and first kv head, as many
// kv heads as the current one): decode_attention_heads prefetches them into L2 while it computes.
// block_row null: nothing follows.
struct UpcomingRows {
  const int32_t* block_row = nullptr;
  int64_t seq_len = 0;
  int64_t head_begin = 0;
};
// T: float, or uint16_t for bfloat16 caches (their 16 bits; loaded exactly as float32). Instantiated
// for both in attention_avx2.cpp.
template <typename T>
void decode_attention_heads(const float* q, const T* key_cache, const T* value_cache, const int32_t* block_row,
                            int64_t seq_len, int64_t block_size, int64_t kv_heads, int64_t head_begin,
                            int64_t head_end, int64_t group, int64_t D, float scale, float* scores, float* out,
                            const UpcomingRows& next);

// Causal attention of rows [row_begin, row_end) of one sequence's chunk of q_len new tokens (its
// last q_len of seq_len positions) for one kv head (prefill_attention_avx2.cpp; D a multiple of 8).
// q: the chunk's first row at this kv head's first query head, rows q_row_stride floats apart; out
// likewise. scratch: prefill_attention_scratch(row_end - row_begin, group, D, seq_len) floats.
// T as for decode_attention_heads.
int64_t prefill_attention_scratch(int64_t rows, int64_t group, int64_t D, int64_t max_positions);
template <typename T>
void prefill_attention_item(const float* q, int64_t q_row_stride, const T* key_cache, const T* value_cache,
                            const int32_t* block_row, int64_t seq_len, int64_t q_len, int64_t row_begin,
                            int64_t row_end, int64_t block_size, int64_t kv_heads, int64_t kv_head, int64_t group,
                            int64_t D, float scale, float* scratch, float* out, int64_t out_row_stride);
}  // namespace avx2

}  // namespace loomlm
