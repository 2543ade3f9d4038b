// loomlm._C: the torch-facing block-quantized linear ops. Checks the arguments, quantizes the
// activations once per call, and splits the output columns over torch's intra-op threads
// (at::parallel_for: the kernels share torch's thread pool instead of starting a second one).
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include "quant_kernels.h"

namespace {

using RowsKernel = void (*)(const loomlm::PackedWeights&, const loomlm::QuantizedActivations&, int64_t, int64_t,
                            int64_t, int64_t, int64_t, float*, bool);

void check_half(const torch::Tensor& t, int64_t N, int64_t nb, const char* name) {
  TORCH_CHECK(t.scalar_type() == torch::kFloat16 && t.is_contiguous() && t.dim() == 2 && t.size(0) == N &&
                  t.size(1) == nb,
              name, " must be contiguous float16 [", N, ", ", nb, "], got ", t.sizes());
}

torch::Tensor block_linear(const torch::Tensor& x, const torch::Tensor& qs, const torch::Tensor& scales,
                           const torch::Tensor* mins, RowsKernel kernel, bool simd) {
  TORCH_CHECK(x.device().is_cpu() && qs.device().is_cpu(), "block-quantized linear layers run on the CPU");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32, "x must be [rows, in] float32");
  const int64_t rows = x.size(0), K = x.size(1), N = qs.size(0), nb = K / loomlm::kBlock;
  TORCH_CHECK(K % (2 * loomlm::kBlock) == 0, "in_features must be padded to a multiple of 64, got ", K);
  const int64_t row_bytes = mins != nullptr ? K / 2 : K;
  TORCH_CHECK(qs.dim() == 2 && qs.element_size() == 1 && qs.is_contiguous() && qs.size(1) == row_bytes,
              "qs must be contiguous one-byte [out, ", row_bytes, "], got ", qs.sizes());
  check_half(scales, N, nb, "scales");
  if (mins != nullptr) check_half(*mins, N, nb, "mins");
  const torch::Tensor xc = x.contiguous();
  auto out = torch::empty({rows, N}, x.options());
  if (rows == 0 || N == 0) return out;
  auto act_q = torch::empty({rows, K}, x.options().dtype(torch::kInt8));
  auto act_scale = torch::empty({rows, nb}, x.options());
  auto act_sum = torch::empty({rows, nb}, x.options());
  loomlm::quantize_activations(xc.data_ptr<float>(), rows, K, act_q.data_ptr<int8_t>(), act_scale.data_ptr<float>(),
                               act_sum.data_ptr<float>(), simd);
  const loomlm::QuantizedActivations act{act_q.data_ptr<int8_t>(), act_scale.data_ptr<float>(),
                                         act_sum.data_ptr<float>()};
  const loomlm::PackedWeights w{static_cast<const uint8_t*>(qs.data_ptr()),
                                reinterpret_cast<const uint16_t*>(scales.data_ptr()),
                                mins != nullptr ? reinterpret_cast<const uint16_t*>(mins->data_ptr()) : nullptr};
  float* y = out.data_ptr<float>();
  // Chunks of at least 16 output columns: enough work per task to hide the pool's wake-up.
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) { kernel(w, act, rows, K, N, begin, end, y, simd); });
  return out;
}

torch::Tensor q4_1_linear(const torch::Tensor& x, const torch::Tensor& qs, const torch::Tensor& scales,
                          const torch::Tensor& mins, bool simd) {
  return block_linear(x, qs, scales, &mins, loomlm::q4_1_linear_rows, simd);
}

torch::Tensor q8_0_linear(const torch::Tensor& x, const torch::Tensor& qs, const torch::Tensor& scales, bool simd) {
  return block_linear(x, qs, scales, nullptr, loomlm::q8_0_linear_rows, simd);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "loomlm's CPU kernels: linear layers over repacked GGUF Q4_1 / Q8_0 blocks";
  m.def("q4_1_linear", &q4_1_linear, "x [rows, in] float32 @ packed Q4_1 W^T -> [rows, out]", py::arg("x"),
        py::arg("qs"), py::arg("scales"), py::arg("mins"), py::arg("simd") = true);
  m.def("q8_0_linear", &q8_0_linear, "x [rows, in] float32 @ packed Q8_0 W^T -> [rows, out]", py::arg("x"),
        py::arg("qs"), py::arg("scales"), py::arg("simd") = true);
  m.def("kernel_isa", &loomlm::kernel_isa, "the instruction set the kernels run on", py::arg("simd") = true);
}
