// The torch-facing bfloat16-weight GEMM (bf16_gemm.h): packing a layer's [in, out] weight once at load
// into panels of 32 columns of bf16 pairs, [ceil(out / 32), ceil(in / 2), 32, 2], and the linear layer
// on them: x rounded to bf16 once per call, then the panels split over torch's intra-op threads (every
// thread runs all rows of its panels: no two threads write one output element).
#include <ATen/Parallel.h>

#include "bf16_gemm.h"
#include "torch_checks.h"
#include "torch_ops.h"

namespace loomlm::ops {
namespace {

// x [rows, K] float32 rows beside contiguous bf16 panels [count, ceil(K / 2), 32, 2] packed by `packer`.
void check_bf16_inputs(const torch::Tensor& x, const torch::Tensor& panels, const char* count, const char* packer) {
  TORCH_CHECK(bf16_panel_gemm_supported(), "this CPU cannot run the bf16 panel GEMM (it needs AVX-512 BF16)");
  check_float_rows(x, 2, "x");
  TORCH_CHECK(panels.device().is_cpu() && panels.scalar_type() == torch::kBFloat16 && panels.dim() == 4 &&
                  panels.is_contiguous() && panels.size(1) == (x.size(1) + 1) / 2 &&
                  panels.size(2) == kBf16PanelWidth && panels.size(3) == 2,
              "panels must be contiguous bfloat16 [", count, ", ", (x.size(1) + 1) / 2, ", 32, 2] (", packer,
              "), got ", panels.scalar_type(), " ", panels.sizes());
}

// x's rows as bf16 pairs [rows, ceil(K / 2)] (uint32 words), rounded to nearest even.
torch::Tensor round_rows(const torch::Tensor& x) {
  const int64_t rows = x.size(0), K = x.size(1), pairs = (K + 1) / 2;
  auto xb = torch::empty({rows, pairs}, x.options().dtype(torch::kInt32));
  auto* dst = reinterpret_cast<uint32_t*>(xb.data_ptr<int32_t>());
  const float* src = x.data_ptr<float>();
  const int64_t ldx = x.stride(0);
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    loomlm::avx512::bf16_round_rows(src, ldx, K, begin, end, dst, pairs);
  });
  return xb;
}

// kernel(xb, panels, out, panel_begin, panel_end) over every panel, split over torch's threads.
template <typename Kernel>
torch::Tensor run_panels(const torch::Tensor& x, const torch::Tensor& panels, torch::Tensor out, Kernel kernel) {
  const torch::Tensor xb = round_rows(x);
  const auto* xb_data = reinterpret_cast<const uint32_t*>(xb.data_ptr<int32_t>());
  const auto* panel_data = reinterpret_cast<const uint32_t*>(panels.data_ptr<at::BFloat16>());
  float* out_data = out.data_ptr<float>();
  at::parallel_for(0, panels.size(0), 1, [&](int64_t begin, int64_t end) {
    kernel(xb_data, panel_data, out_data, begin, end);
  });
  return out;
}

void check_weight(const torch::Tensor& weight_t) {
  TORCH_CHECK(weight_t.device().is_cpu() && weight_t.dim() == 2 &&
                  (weight_t.scalar_type() == torch::kFloat32 || weight_t.scalar_type() == torch::kBFloat16),
              "weight_t must be a CPU float32 or bfloat16 [in, out] tensor, got ", weight_t.scalar_type(), " ",
              weight_t.sizes());
}

}  // namespace

bool bf16_panel_gemm_supported() { return loomlm::avx512::bf16_supported(); }

torch::Tensor bf16_pack_panels(const torch::Tensor& weight_t) {
  check_weight(weight_t);
  const int64_t K = weight_t.size(0), N = weight_t.size(1), pairs = (K + 1) / 2;
  const int64_t num_panels = (N + kBf16PanelWidth - 1) / kBf16PanelWidth;
  auto padded = torch::zeros({2 * pairs, num_panels * kBf16PanelWidth}, weight_t.options());
  padded.narrow(0, 0, K).narrow(1, 0, N).copy_(weight_t);
  // [pairs, 2 (k parity), panels, 32] -> [panels, pairs, 32, 2]
  return padded.view({pairs, 2, num_panels, kBf16PanelWidth}).permute({2, 0, 3, 1}).to(torch::kBFloat16).contiguous();
}

torch::Tensor bf16_pack_gate_up_panels(const torch::Tensor& weight_t) {
  check_weight(weight_t);
  TORCH_CHECK(weight_t.size(1) % 2 == 0, "a gate | up weight has an even number of columns, got ", weight_t.size(1));
  const int64_t K = weight_t.size(0), I = weight_t.size(1) / 2, pairs = (K + 1) / 2;
  const int64_t num_panels = (I + kBf16GateUpWidth - 1) / kBf16GateUpWidth;
  auto padded = torch::zeros({2 * pairs, 2, num_panels * kBf16GateUpWidth}, weight_t.options());
  padded.narrow(0, 0, K).narrow(2, 0, I).copy_(weight_t.view({K, 2, I}));
  // [pairs, 2 (k parity), 2 (gate, up), panels, 16] -> [panels, pairs, 2 (gate, up), 16, 2 (k parity)]
  return padded.view({pairs, 2, 2, num_panels, kBf16GateUpWidth})
      .permute({3, 0, 2, 4, 1})
      .to(torch::kBFloat16)
      .reshape({num_panels, pairs, kBf16PanelWidth, 2})
      .contiguous();
}

torch::Tensor bf16_panel_linear(const torch::Tensor& x, const torch::Tensor& panels,
                                const c10::optional<torch::Tensor>& bias, int64_t out_features) {
  check_bf16_inputs(x, panels, "ceil(out / 32)", "bf16_pack_panels");
  const int64_t rows = x.size(0), K = x.size(1), num_panels = panels.size(0), pairs = panels.size(1);
  TORCH_CHECK(out_features >= 0 && (out_features + kBf16PanelWidth - 1) / kBf16PanelWidth == num_panels,
              "out_features ", out_features, " does not match ", num_panels, " panels of 32 columns");
  const float* bias_ptr = bias_data(bias, out_features);
  auto out = torch::empty({rows, out_features}, x.options());
  if (rows == 0 || out_features == 0) return out;
  if (K == 0) return bias.has_value() ? out.copy_(bias->expand({rows, out_features})) : out.zero_();
  return run_panels(x, panels, out, [&](const uint32_t* xb, const uint32_t* p, float* o, int64_t b, int64_t e) {
    loomlm::avx512::bf16_panel_gemm(xb, rows, pairs, p, out_features, bias_ptr, o, b, e);
  });
}

torch::Tensor bf16_panel_silu_mul(const torch::Tensor& x, const torch::Tensor& panels, int64_t intermediate) {
  check_bf16_inputs(x, panels, "ceil(I / 16)", "bf16_pack_gate_up_panels");
  const int64_t rows = x.size(0), K = x.size(1), num_panels = panels.size(0), pairs = panels.size(1);
  TORCH_CHECK(intermediate >= 0 && (intermediate + kBf16GateUpWidth - 1) / kBf16GateUpWidth == num_panels,
              "intermediate size ", intermediate, " does not match ", num_panels, " gate_up panels of 16 columns");
  if (rows == 0 || intermediate == 0 || K == 0) return torch::zeros({rows, intermediate}, x.options());
  auto out = torch::empty({rows, intermediate}, x.options());
  return run_panels(x, panels, out, [&](const uint32_t* xb, const uint32_t* p, float* o, int64_t b, int64_t e) {
    loomlm::avx512::bf16_panel_gemm_silu_mul(xb, rows, pairs, p, intermediate, o, b, e);
  });
}

}  // namespace loomlm::ops
