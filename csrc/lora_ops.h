// Multi-LoRA on the CPU for decode-sized groups of tokens, in the CPU layout of
// loomlm/adapters/cpu_layout.py: each slot's row in a decoder layer is
// [A^T (in x k*rank) | B_1^T (rank x w_1) | ... | B_k^T (rank x w_k)], scale folded into B.
// Each slot's weights are read once per step from where they live (no gather copy, no padding).
#pragma once

#include <cstdint>

namespace loomlm {

// out[t, offsets[m] : offsets[m] + widths[m]] += (x[t] A^T)[m*rank : (m+1)*rank] B_m^T for the
// `count` tokens `token_ids` of one slot. `y`: scratch of count * num_modules * rank floats.
void lora_slot_tokens(const float* x, int64_t x_stride, const int64_t* token_ids, int64_t count, const float* row,
                      int64_t in, int64_t rank, int64_t num_modules, const int64_t* offsets, const int64_t* widths,
                      float* out, int64_t out_stride, float* y);

}  // namespace loomlm
