// Block-quantized linear kernels on the CPU (GGUF's Q4_1 and Q8_0 weights, repacked), over raw
// pointers. The torch-facing wrappers and the threading live in ops.cpp; the same math is written
// out in torch in loomlm/kernels/quant_linear.py (`*_ref`), which the tests compare against.
//
// Packed layouts (built from GGUF blocks by quant_linear.pack_*; K padded to whole block pairs):
//   Q4_1: qs [N, K/2] bytes, per pair of blocks 32 bytes whose low nibbles are the pair's weights
//         0-31 (the first block) and high nibbles 32-63 (the second); scales, mins [N, K/32] fp16.
//   Q8_0: qs [N, K] int8; scales [N, K/32] fp16.
#pragma once

#include <cstddef>
#include <cstdint>

namespace loomlm {

constexpr int64_t kBlock = 32;  // weights (and activations) per quantization block

// Activations quantized per row and per 32-block: q = round_half_even(x / d), d = absmax / 127.
struct QuantizedActivations {
  const int8_t* q;      // [rows, K]
  const float* scale;   // [rows, K / 32]: d
  const float* sum;     // [rows, K / 32]: d * sum(q)  (Q4_1's min term)
};

struct PackedWeights {
  const uint8_t* qs;
  const uint16_t* scales;  // fp16 bits
  const uint16_t* mins;    // fp16 bits (Q4_1 only)
};

// The instruction sets the kernels are written for; the best one the CPU has is the default, and the
// tests run every one the CPU can (each against the same torch reference).
enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512Vnni = 2 };
Isa best_isa();
bool isa_supported(Isa isa);
const char* isa_name(Isa isa);  // "scalar", "avx2", "avx512_vnni"

void quantize_activations(const float* x, int64_t rows, int64_t K, int8_t* q, float* scale, float* sum, Isa isa);

// out[m, n] for n in [n_begin, n_end), every m < rows; out's row stride is N.
void q4_1_linear_rows(const PackedWeights& w, const QuantizedActivations& act, int64_t rows, int64_t K,
                      int64_t N, int64_t n_begin, int64_t n_end, float* out, Isa isa);
void q8_0_linear_rows(const PackedWeights& w, const QuantizedActivations& act, int64_t rows, int64_t K,
                      int64_t N, int64_t n_begin, int64_t n_end, float* out, Isa isa);

// How an int8 layer's exact int32 sums become its float32 output [rows, N]:
// out[m, n] = float(sum) * x_scale[m] * w_scale[n] (+ bias[n]), in that order (the torch layer's).
struct Int8Epilogue {
  const float* x_scale;  // [rows]
  const float* w_scale;  // [N]
  const float* bias;     // [N] or nullptr
  float* out;            // [rows, N]
};

// int8 per-channel weights w [N, K] times per-row int8 activations xq [rows, K]: the exact int32 sums
// for n in [n_begin, n_end), written through the epilogue. Written for scalar, AVX2 and AVX-512 VNNI
// (int8_vnni.cpp). From gemm_from_rows rows on, the AVX2 code is a blocked GEMM over int16-widened
// panels; below, tiles that read each weight byte once.
void int8_linear_rows(const int8_t* xq, int64_t rows, int64_t K, const int8_t* w, int64_t N, int64_t n_begin,
                      int64_t n_end, const Int8Epilogue& epilogue, Isa isa, int64_t gemm_from_rows);

}  // namespace loomlm
