// loomlm._C's int8 per-channel layer: the kernel chosen per CPU and per row count, the activations
// quantized once per call (per row, after SmoothQuant's inverse smoothing), the exact int32 sums
// split over torch's intra-op threads by output columns, then rescaled to float32.
#include <ATen/Parallel.h>

#include <limits>

#include "model_ops.h"
#include "quant_kernels.h"
#include "torch_checks.h"
#include "torch_ops.h"

namespace loomlm::ops {
namespace {

// From this many rows the AVX2 path runs the blocked int16 GEMM rather than the byte tiles (both
// kernels on every layer shape at 4-512 rows, AMD Zen 3: at 576 inputs the GEMM led from 16 rows,
// 1.11x, at 1536 only from 32, where the tiles' single pass over the weights stops binding).
int64_t int8_gemm_rows(int64_t K) { return K <= 1024 ? 16 : 32; }
// From this many rows a VNNI CPU hands the sums to oneDNN's GEMM. Through int8_linear over all the
// model's layers in turn (weights from DRAM, as in a step; AMD Zen 4): loomlm's VNNI tiles 1.66x
// oneDNN at 1 row, 1.37x at 32, 1.09x at 64, 0.91-0.97x at 96-127 (from 128 oneDNN changes its
// blocking and the two traded places from run to run).
constexpr int64_t kVnniOnednnRows = 96;
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

}  // namespace

std::string int8_kernel() {
  // VNNI: loomlm's tiles for few rows, oneDNN's GEMM for many (see kVnniOnednnRows). AVX2 only:
  // loomlm's kernels (oneDNN without VNNI ran 4-25x slower than float32 there, AMD Zen 3).
  switch (loomlm::best_isa()) {
    case loomlm::Isa::kAvx512Vnni: return "avx512_vnni";
    case loomlm::Isa::kAvx2: return "avx2";
    default: return "onednn";
  }
}

torch::Tensor int8_linear(const torch::Tensor& x, const torch::Tensor& qweight, const torch::Tensor& w_scale,
                          const torch::Tensor& inv_smooth, const c10::optional<torch::Tensor>& bias,
                          const std::string& kernel) {
  check_float_rows(x, 2, "x");
  const int64_t T = x.size(0), K = x.size(1), N = qweight.size(0);
  std::string chosen = kernel == "auto" ? int8_kernel() : kernel;
  // "avx2" picks tiles or the GEMM by row count, "avx512_vnni" loomlm's tiles or oneDNN; the other
  // names pin one (for tests and benches).
  if (chosen == "avx512_vnni") chosen = T < kVnniOnednnRows ? "avx512_vnni_tiles" : "onednn";
  const bool loomlm_avx2 = chosen == "avx2" || chosen == "avx2_tiles" || chosen == "avx2_gemm";
  TORCH_CHECK(chosen == "onednn" || chosen == "scalar" || chosen == "avx512_vnni_tiles" || loomlm_avx2,
              "unknown int8 kernel '", chosen,
              "' (auto, onednn, avx2, avx2_tiles, avx2_gemm, avx512_vnni, avx512_vnni_tiles, scalar)");
  const loomlm::Isa isa = chosen == "onednn"              ? loomlm::Isa::kScalar
                          : chosen == "avx512_vnni_tiles" ? isa_named("avx512_vnni")
                                                          : isa_named(loomlm_avx2 ? "avx2" : chosen);
  const int64_t gemm_from_rows = chosen == "avx2_gemm" ? 0 : chosen == "avx2_tiles" ? kNever : int8_gemm_rows(K);
  // Any strides: _int_mm reads the layout the layer keeps (chosen for its speed).
  TORCH_CHECK(qweight.scalar_type() == torch::kInt8 && qweight.dim() == 2 && qweight.size(1) == K,
              "qweight must be int8 [out, ", K, "], got ", qweight.sizes());
  for (const auto* t : {&w_scale, &inv_smooth}) {
    TORCH_CHECK(t->scalar_type() == torch::kFloat32 && t->is_contiguous() && t->dim() == 1, "scales must be float32");
  }
  TORCH_CHECK(w_scale.numel() == N && (inv_smooth.numel() == 0 || inv_smooth.numel() == K), "scale sizes mismatch");
  const float* bias_ptr = nullptr;
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == torch::kFloat32 && bias->is_contiguous() && bias->numel() == N,
                "bias must be contiguous float32 [", N, "]");
    bias_ptr = bias->data_ptr<float>();
  }
  auto xq = torch::empty({T, K}, x.options().dtype(torch::kInt8));
  auto x_scale = torch::empty({T}, x.options());
  const float* smooth = inv_smooth.numel() ? inv_smooth.data_ptr<float>() : nullptr;
  at::parallel_for(0, T, 16, [&](int64_t begin, int64_t end) {
    loomlm::int8_quantize_rows(x.data_ptr<float>(), x.stride(0), smooth, K, begin, end, xq.data_ptr<int8_t>(),
                               x_scale.data_ptr<float>());
  });
  auto out = torch::empty({T, N}, x.options());
  if (chosen == "onednn") {
    const torch::Tensor acc = at::_int_mm(xq, qweight.t());
    at::parallel_for(0, T, 16, [&](int64_t begin, int64_t end) {
      loomlm::int8_dequantize_rows(acc.data_ptr<int32_t>(), x_scale.data_ptr<float>(), w_scale.data_ptr<float>(),
                                   bias_ptr, N, begin, end, out.data_ptr<float>());
    });
    return out;
  }
  TORCH_CHECK(qweight.is_contiguous(), "the ", chosen, " int8 kernel reads qweight as contiguous [out, in]");
  // loomlm's kernels rescale each tile as it leaves the registers: no int32 [T, N] round trip.
  const loomlm::Int8Epilogue epilogue{x_scale.data_ptr<float>(), w_scale.data_ptr<float>(), bias_ptr,
                                      out.data_ptr<float>()};
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    loomlm::int8_linear_rows(xq.data_ptr<int8_t>(), T, K, qweight.data_ptr<int8_t>(), N, begin, end, epilogue, isa,
                             gemm_from_rows);
  });
  return out;
}

}  // namespace loomlm::ops
