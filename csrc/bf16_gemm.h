// The bfloat16-weight GEMM of `quantization="bf16"` (bf16_gemm_avx512.cpp: the kernel; bf16_gemm.cpp:
// the packing and the torch ops, which split panels over threads). Activations are float32 outside;
// a call rounds them to bfloat16 once, and the sums are float32 (vdpbf16ps).
#pragma once

#include <cstdint>

namespace loomlm {

constexpr int64_t kBf16PanelWidth = 32;   // output columns per panel: two zmm of float32 sums
constexpr int64_t kBf16GateUpWidth = 16;  // a gate_up panel: 16 gate columns, then the same 16 up columns

namespace avx512 {

bool bf16_supported();  // AVX-512 F/BW/VL and AVX-512 BF16

// xb[r][j] = the bf16 pair (x[r][2j], x[r][2j + 1]) rounded to nearest even (low half: the even
// element; zero past K), for j < pairs = ceil(K / 2); rows [begin, end).
void bf16_round_rows(const float* x, int64_t ldx, int64_t K, int64_t begin, int64_t end, uint32_t* xb,
                     int64_t pairs);

// out[rows, N] (row stride N) = xb @ W (+ bias) for panels [panel_begin, panel_end) of W packed as
// [ceil(N / 32), pairs, 32] bf16 pairs (panel p, pair j, lane c: W[2j][32p + c], W[2j + 1][32p + c];
// zero past K and N). bias: N floats, or null. pairs >= 1.
void bf16_panel_gemm(const uint32_t* xb, int64_t rows, int64_t pairs, const uint32_t* panels, int64_t N,
                     const float* bias, float* out, int64_t panel_begin, int64_t panel_end);

// out[rows, I] (row stride I) = silu(xb @ gate) * (xb @ up) for panels of a gate | up weight whose
// panel p holds gate columns 16p..16p+16 in lanes 0-15 and the same up columns in lanes 16-31. The
// activation makes silu_mul_rows' operations (model_ops.h) on the sums in registers: equal to
// bf16_panel_gemm on the plain packing followed by silu_mul, bit for bit.
void bf16_panel_gemm_silu_mul(const uint32_t* xb, int64_t rows, int64_t pairs, const uint32_t* panels, int64_t I,
                              float* out, int64_t panel_begin, int64_t panel_end);

}  // namespace avx512
}  // namespace loomlm
