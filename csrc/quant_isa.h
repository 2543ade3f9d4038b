// The per-instruction-set kernels behind quant_kernels.h's dispatch (internal to the extension).
#pragma once

#include "quant_kernels.h"

namespace loomlm::avx2 {

bool supported();  // AVX2, FMA and F16C
void quantize_activations(const float* x, int64_t rows, int64_t K, int8_t* q, float* scale, float* sum);
void q4_1_rows(const PackedWeights& w, const QuantizedActivations& act, int64_t rows, int64_t K, int64_t N,
               int64_t n_begin, int64_t n_end, float* out);
void q8_0_rows(const PackedWeights& w, const QuantizedActivations& act, int64_t rows, int64_t K, int64_t N,
               int64_t n_begin, int64_t n_end, float* out);
void int8_rows(const int8_t* xq, int64_t rows, int64_t K, const int8_t* w, int64_t N, int64_t n_begin,
               int64_t n_end, const Int8Epilogue& epilogue);
// The same sums as a blocked GEMM over int16-widened panels (int8_gemm_avx2.cpp): for many rows.
void int8_rows_wide(const int8_t* xq, int64_t rows, int64_t K, const int8_t* w, int64_t N, int64_t n_begin,
                    int64_t n_end, const Int8Epilogue& epilogue);

}  // namespace loomlm::avx2

namespace loomlm::avx512 {

// int8_linear_rows' sums with vpdpbusd (int8_vnni.cpp), on the same [N, K] weights; for a CPU that
// isa_supported(Isa::kAvx512Vnni).
void int8_rows(const int8_t* xq, int64_t rows, int64_t K, const int8_t* w, int64_t N, int64_t n_begin,
               int64_t n_end, const Int8Epilogue& epilogue);

}  // namespace loomlm::avx512
