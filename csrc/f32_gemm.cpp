// The torch-facing float32 panel GEMM (f32_gemm.h): packing a layer's [in, out] weight into panels
// of 16 columns once at load, and the linear layer on them, its panels split over torch's intra-op
// threads (every thread runs all rows of its panels: no two threads write one output element).
#include <ATen/Parallel.h>

#include "f32_gemm.h"
#include "quant_isa.h"
#include "torch_checks.h"
#include "torch_ops.h"

namespace loomlm::ops {
namespace {

// x [rows, K] float32 rows beside contiguous panels [count, K, 16] packed by `packer`, whose panel
// count `count` names; this CPU must run the kernel.
void check_panel_inputs(const torch::Tensor& x, const torch::Tensor& panels, const char* count, const char* packer) {
  TORCH_CHECK(f32_panel_gemm_supported(), "this CPU cannot run the float32 panel GEMM (it needs AVX2 and FMA)");
  check_float_rows(x, 2, "x");
  check_float_rows(panels, 3, "panels");
  TORCH_CHECK(panels.is_contiguous() && panels.size(1) == x.size(1) && panels.size(2) == kPanelWidth,
              "panels must be contiguous [", count, ", ", x.size(1), ", 16] (", packer, "), got ", panels.sizes());
}

// kernel(x, ldx, panels, out, panel_begin, panel_end) over every panel, split over torch's threads
// (each thread all rows of its panels), with x's rows made unit-stride first where they are not.
template <typename Kernel>
void for_panel_ranges(const torch::Tensor& x, const torch::Tensor& panels, torch::Tensor& out, Kernel kernel) {
  const torch::Tensor xc = x.stride(0) >= x.size(1) ? x : x.contiguous();
  const float* x_data = xc.data_ptr<float>();
  const float* panel_data = panels.data_ptr<float>();
  float* out_data = out.data_ptr<float>();
  at::parallel_for(0, panels.size(0), 1, [&](int64_t begin, int64_t end) {
    kernel(x_data, xc.stride(0), panel_data, out_data, begin, end);
  });
}

}  // namespace

bool f32_panel_gemm_supported() { return loomlm::avx2::supported(); }

torch::Tensor f32_pack_panels(const torch::Tensor& weight_t) {
  check_float_rows(weight_t, 2, "weight_t");
  const int64_t K = weight_t.size(0), N = weight_t.size(1);
  const int64_t num_panels = (N + kPanelWidth - 1) / kPanelWidth;
  auto padded = torch::zeros({K, num_panels * kPanelWidth}, weight_t.options());
  padded.narrow(1, 0, N).copy_(weight_t);
  return padded.view({K, num_panels, kPanelWidth}).permute({1, 0, 2}).contiguous();
}

torch::Tensor f32_panel_linear(const torch::Tensor& x, const torch::Tensor& panels,
                               const c10::optional<torch::Tensor>& bias, int64_t out_features) {
  check_panel_inputs(x, panels, "ceil(out / 16)", "f32_pack_panels");
  const int64_t rows = x.size(0), K = x.size(1), num_panels = panels.size(0);
  TORCH_CHECK(out_features >= 0 && (out_features + kPanelWidth - 1) / kPanelWidth == num_panels,
              "out_features ", out_features, " does not match ", num_panels, " panels of 16 columns");
  const float* bias_ptr = bias_data(bias, out_features);
  auto out = torch::empty({rows, out_features}, x.options());
  if (rows == 0 || out_features == 0) return out;
  if (K == 0) return bias.has_value() ? out.copy_(bias->expand({rows, out_features})) : out.zero_();
  for_panel_ranges(x, panels, out, [&](const float* xs, int64_t ldx, const float* p, float* o, int64_t b, int64_t e) {
    loomlm::avx2::f32_panel_gemm(xs, rows, K, ldx, p, out_features, bias_ptr, o, b, e);
  });
  return out;
}

torch::Tensor f32_pack_gate_up_panels(const torch::Tensor& weight_t) {
  check_float_rows(weight_t, 2, "weight_t");
  TORCH_CHECK(weight_t.size(1) % 2 == 0, "a gate | up weight has an even number of columns, got ", weight_t.size(1));
  const int64_t K = weight_t.size(0), I = weight_t.size(1) / 2;
  const int64_t num_panels = (I + kGateUpWidth - 1) / kGateUpWidth;
  // [K, 2 (gate, up), num_panels, 8] -> [num_panels, K, 2, 8]: each panel's 8 gate then 8 up columns.
  auto padded = torch::zeros({K, 2, num_panels * kGateUpWidth}, weight_t.options());
  padded.narrow(2, 0, I).copy_(weight_t.view({K, 2, I}));
  return padded.view({K, 2, num_panels, kGateUpWidth}).permute({2, 0, 1, 3}).reshape({num_panels, K, kPanelWidth});
}

torch::Tensor f32_panel_silu_mul(const torch::Tensor& x, const torch::Tensor& panels, int64_t intermediate) {
  check_panel_inputs(x, panels, "ceil(I / 8)", "f32_pack_gate_up_panels");
  const int64_t rows = x.size(0), K = x.size(1), num_panels = panels.size(0);
  TORCH_CHECK(intermediate >= 0 && (intermediate + kGateUpWidth - 1) / kGateUpWidth == num_panels,
              "intermediate size ", intermediate, " does not match ", num_panels, " gate_up panels of 8 columns");
  if (rows == 0 || intermediate == 0 || K == 0) {  // K = 0: silu(0) * 0
    return torch::zeros({rows, intermediate}, x.options());
  }
  auto out = torch::empty({rows, intermediate}, x.options());
  for_panel_ranges(x, panels, out, [&](const float* xs, int64_t ldx, const float* p, float* o, int64_t b, int64_t e) {
    loomlm::avx2::f32_panel_gemm_silu_mul(xs, rows, K, ldx, p, intermediate, o, b, e);
  });
  return out;
}

}  // namespace loomlm::ops
