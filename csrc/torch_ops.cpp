// loomlm._C's torch-facing ops: argument checks (a bad tensor is an exception, never a read or
// write outside it), the activations quantized once per call, and the work split over torch's
// intra-op threads (at::parallel_for: the kernels share torch's thread pool, not a second one).
#include "torch_ops.h"

#include <ATen/Parallel.h>

#include <vector>

#include "model_ops.h"
#include "quant_kernels.h"
#include "torch_checks.h"

namespace loomlm::ops {
namespace {

using RowsKernel = void (*)(const loomlm::PackedWeights&, const loomlm::QuantizedActivations&, int64_t, int64_t,
                            int64_t, int64_t, int64_t, float*, loomlm::Isa);

void check_half(const torch::Tensor& t, int64_t N, int64_t nb, const char* name) {
  TORCH_CHECK(t.scalar_type() == torch::kFloat16 && t.is_contiguous() && t.dim() == 2 && t.size(0) == N &&
                  t.size(1) == nb,
              name, " must be contiguous float16 [", N, ", ", nb, "], got ", t.sizes());
}

torch::Tensor block_linear(const torch::Tensor& x, const torch::Tensor& qs, const torch::Tensor& scales,
                           const torch::Tensor* mins, RowsKernel kernel, const std::string& isa_name) {
  const loomlm::Isa isa = isa_named(isa_name);
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
                               act_sum.data_ptr<float>(), isa);
  const loomlm::QuantizedActivations act{act_q.data_ptr<int8_t>(), act_scale.data_ptr<float>(),
                                         act_sum.data_ptr<float>()};
  const loomlm::PackedWeights w{static_cast<const uint8_t*>(qs.data_ptr()),
                                reinterpret_cast<const uint16_t*>(scales.data_ptr()),
                                mins != nullptr ? reinterpret_cast<const uint16_t*>(mins->data_ptr()) : nullptr};
  float* y = out.data_ptr<float>();
  // Chunks of at least 16 output columns: enough work per task to hide the pool's wake-up.
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) { kernel(w, act, rows, K, N, begin, end, y, isa); });
  return out;
}


}  // namespace

torch::Tensor q4_1_linear(const torch::Tensor& x, const torch::Tensor& qs, const torch::Tensor& scales,
                          const torch::Tensor& mins, const std::string& isa) {
  return block_linear(x, qs, scales, &mins, loomlm::q4_1_linear_rows, isa);
}

torch::Tensor q8_0_linear(const torch::Tensor& x, const torch::Tensor& qs, const torch::Tensor& scales,
                          const std::string& isa) {
  return block_linear(x, qs, scales, nullptr, loomlm::q8_0_linear_rows, isa);
}

torch::Tensor rms_norm(const torch::Tensor& x, const c10::optional<torch::Tensor>& residual,
                       const torch::Tensor& weight, double eps) {
  check_float_rows(x, 2, "x");
  const int64_t T = x.size(0), D = x.size(1);
  TORCH_CHECK(weight.is_contiguous() && weight.numel() == D && weight.scalar_type() == torch::kFloat32,
              "weight must be contiguous float32 [", D, "]");
  float* res = nullptr;
  if (residual.has_value()) {
    check_float_rows(*residual, 2, "residual");
    TORCH_CHECK(residual->is_contiguous() && residual->size(0) == T && residual->size(1) == D,
                "residual must be contiguous [", T, ", ", D, "]");
    res = residual->data_ptr<float>();
  }
  auto out = torch::empty({T, D}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* w = weight.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, T, 64, [&](int64_t begin, int64_t end) {
    loomlm::rms_norm_rows(xp, x.stride(0), res, w, static_cast<float>(eps), D, begin, end, o);
  });
  return out;
}

void rotary_store_kv(torch::Tensor& qkv, const torch::Tensor& cos, const torch::Tensor& sin, int64_t rot_heads,
                     int64_t k_head, int64_t kv_heads, const torch::Tensor& slot_mapping, torch::Tensor& key_cache,
                     torch::Tensor& value_cache) {
  check_float_rows(qkv, 2, "qkv");
  check_cache(key_cache, "key_cache");
  check_cache(value_cache, "value_cache");
  const int64_t T = qkv.size(0), D = key_cache.size(3);
  TORCH_CHECK(D % 2 == 0 && D <= 512, "head_dim must be even and at most 512, got ", D);
  TORCH_CHECK(key_cache.sizes() == value_cache.sizes() && key_cache.size(2) == kv_heads, "cache shapes mismatch");
  TORCH_CHECK(key_cache.scalar_type() == value_cache.scalar_type(), "the key and value caches differ in dtype");
  TORCH_CHECK(rot_heads <= k_head + kv_heads && (k_head + 2 * kv_heads) * D <= qkv.size(1),
              "qkv has ", qkv.size(1), " columns, too few for the heads given");
  for (const auto* t : {&cos, &sin}) {
    check_float_rows(*t, 2, "cos/sin");
    TORCH_CHECK(t->is_contiguous() && t->size(0) == T && t->size(1) == D, "cos/sin must be contiguous [", T, ", ", D, "]");
  }
  TORCH_CHECK(slot_mapping.scalar_type() == torch::kInt64 && slot_mapping.is_contiguous() && slot_mapping.numel() == T,
              "slot_mapping must be contiguous int64 [", T, "]");
  const int64_t* slots = slot_mapping.data_ptr<int64_t>();
  const int64_t num_slots = key_cache.size(0) * key_cache.size(1);
  for (int64_t t = 0; t < T; ++t) TORCH_CHECK(slots[t] < num_slots, "slot ", slots[t], " is past the cache");
  float* q = qkv.data_ptr<float>();
  const loomlm::CacheRows cache{key_cache.data_ptr(), value_cache.data_ptr(),
                                key_cache.scalar_type() == torch::kBFloat16};
  at::parallel_for(0, T, 16, [&](int64_t begin, int64_t end) {
    loomlm::rotary_store_rows(q, qkv.stride(0), rot_heads, D, cos.data_ptr<float>(), sin.data_ptr<float>(), k_head,
                              kv_heads, slots, cache, begin, end);
  });
}

torch::Tensor silu_mul(const torch::Tensor& gate_up) {
  check_float_rows(gate_up, 2, "gate_up");
  TORCH_CHECK(gate_up.is_contiguous() && gate_up.size(1) % 2 == 0, "gate_up must be contiguous [T, 2 * I]");
  const int64_t T = gate_up.size(0), I = gate_up.size(1) / 2;
  auto out = torch::empty({T, I}, gate_up.options());
  at::parallel_for(0, T, 8, [&](int64_t begin, int64_t end) {
    loomlm::silu_mul_rows(gate_up.data_ptr<float>(), I, begin, end, out.data_ptr<float>());
  });
  return out;
}

}  // namespace loomlm::ops
