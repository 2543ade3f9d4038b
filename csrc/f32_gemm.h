// The float32 panel GEMM of the linear layers (f32_gemm_avx2.cpp: the kernel; f32_gemm.cpp: the
// packing and the torch op, which splits panels over threads).
#pragma once

#include <cstdint>

namespace loomlm {

constexpr int64_t kPanelWidth = 16;  // output columns per panel: two AVX2 vectors
constexpr int64_t kGateUpWidth = 8;  // a gate_up panel: 8 gate columns, then the same 8 up columns

namespace avx2 {

// out[rows, N] (row stride N) = x[rows, K] (row stride ldx) @ W + bias, for panels
// [panel_begin, panel_end) of W packed as [ceil(N / 16), K, 16] (zero columns past N). bias: N
// floats, or null. K >= 1. Needs avx2::supported() (quant_isa.h).
void f32_panel_gemm(const float* x, int64_t rows, int64_t K, int64_t ldx, const float* panels, int64_t N,
                    const float* bias, float* out, int64_t panel_begin, int64_t panel_end);

// out[rows, I] (row stride I) = silu(x @ gate) * (x @ up) for panels [panel_begin, panel_end) of
// a [K, 2I] gate | up weight packed as [ceil(I / 8), K, 16]: panel p holds gate columns 8p..8p+8
// and then up columns 8p..8p+8 (zero past I). The sums and the activation equal f32_panel_gemm's
// on the plain packing followed by silu_mul_rows, bit for bit. K >= 1.
void f32_panel_gemm_silu_mul(const float* x, int64_t rows, int64_t K, int64_t ldx, const float* panels, int64_t I,
                             float* out, int64_t panel_begin, int64_t panel_end);

}  // namespace avx2
}  // namespace loomlm
