// Multi-LoRA on the CPU for decode-sized groups of tokens, one slot's group per call. Two row layouts:
//
// * float32, loomlm/adapters/cpu_layout.py's: each slot's row in a decoder layer is
//   [A^T (in x k*rank) | B_1^T (rank x w_1) | ... | B_k^T (rank x w_k)], scale folded into B.
// * int8 (lora_dtype="int8"), the same weights rounded per rank component and packed in blocks of 16
//   columns so that a kernel reads them front to back: A^T as [ceil(k*rank/16)][in][16], then each B_m^T
//   as [ceil(w_m/16)][rank][16], zero-padded; scales[j] is the product of A's and B's scales of rank
//   component j, applied to the shrink's output (ceil(k*rank/16)*16 of them, zero past k*rank). Why blocks: walking the float32 layout's
//   columns in register tiles strides across pages, and that ran slower than the plain loop.
//
// Each slot's weights are read once per step from where they live (no gather copy, no padding of tokens).
#pragma once

#include <cstdint>

namespace loomlm {

// One slot's tokens and where their updates go: out[t, offsets[m] : offsets[m] + widths[m]] +=
// (x[t] A^T)[m*rank : (m+1)*rank] B_m^T for the `count` tokens `token_ids`.
struct LoRASlotTokens {
  const float* x;
  int64_t x_stride;
  const int64_t* token_ids;
  int64_t count;
  int64_t in, rank, num_modules;
  const int64_t* offsets;
  const int64_t* widths;
  float* out;
  int64_t out_stride;
};

constexpr int64_t kLoRABlock = 16;  // columns per block of the int8 layout
// Up to this many tokens a slot's int8 weights are widened in registers as each tile reads them; more
// widen each block once into a buffer. The float32 layout runs the portable loop up to this many.
constexpr int64_t kLoRADirectTokens = 8;

inline int64_t lora_blocks(int64_t n) { return (n + kLoRABlock - 1) / kLoRABlock; }

// Bytes of a slot's int8 row (the layout above).
inline int64_t lora_int8_row_size(int64_t in, int64_t rank, int64_t num_modules, const int64_t* widths) {
  int64_t size = lora_blocks(num_modules * rank) * kLoRABlock * in;
  for (int64_t m = 0; m < num_modules; ++m) size += lora_blocks(widths[m]) * kLoRABlock * rank;
  return size;
}

// Floats of scratch `y` the kernels below need for `s`.
inline int64_t lora_scratch_size(const LoRASlotTokens& s) {
  return s.count * lora_blocks(s.num_modules * s.rank) * kLoRABlock;
}

// Portable kernels (the compiler vectorizes them per instruction set).
void lora_slot_tokens(const LoRASlotTokens& s, const float* row, float* y);
void lora_slot_tokens_int8(const LoRASlotTokens& s, const int8_t* row, const float* scales, float* y);

namespace avx2 {
// The same in register tiles of 4 tokens x 16 columns (lora_avx2.cpp). Need avx2::supported().
void lora_slot_tokens(const LoRASlotTokens& s, const float* row, float* y);
void lora_slot_tokens_int8(const LoRASlotTokens& s, const int8_t* row, const float* scales, float* y);
}  // namespace avx2

namespace avx512 {
// Any token count; need isa_supported(Isa::kAvx512Vnni). Both layouts in register tiles of up to 24
// sums (lora_avx512.cpp: int8 widened to float); and int8 rows with vpdpbusd, the tokens' activations
// quantized to int8 per token (and y per token and module) as an int8 base quantizes its own
// (lora_vnni.cpp).
void lora_slot_tokens(const LoRASlotTokens& s, const float* row, float* y);
void lora_slot_tokens_int8(const LoRASlotTokens& s, const int8_t* row, const float* scales, float* y);
void lora_slot_tokens_vnni(const LoRASlotTokens& s, const int8_t* row, const float* scales, float* y);
}  // namespace avx512

}  // namespace loomlm
