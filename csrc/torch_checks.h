// Argument checks shared by the torch-facing ops (torch_ops.cpp, int8_ops.cpp): a bad tensor or
// kernel name is an exception naming the problem, never a read or write outside a tensor.
#pragma once

#include <torch/extension.h>

#include <string>

#include "quant_kernels.h"

namespace loomlm::ops {

inline loomlm::Isa isa_named(const std::string& name) {
  if (name == "auto") return loomlm::best_isa();
  for (const auto isa : {loomlm::Isa::kScalar, loomlm::Isa::kAvx2, loomlm::Isa::kAvx512Vnni}) {
    if (name == loomlm::isa_name(isa)) {
      TORCH_CHECK(loomlm::isa_supported(isa), "this CPU cannot run the ", name, " kernels");
      return isa;
    }
  }
  TORCH_CHECK(false, "unknown kernel instruction set '", name, "' (auto, scalar, avx2, avx512_vnni)");
}

inline void check_float_rows(const torch::Tensor& t, int64_t dim, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.dim() == dim && t.stride(dim - 1) == 1,
              name, " must be a CPU float32 tensor of ", dim, " dims with unit stride on the last, got ",
              t.scalar_type(), " ", t.sizes());
}

// A linear layer's optional bias: its data (checked to be `out_features` contiguous CPU float32), or null.
inline const float* bias_data(const c10::optional<torch::Tensor>& bias, int64_t out_features) {
  if (!bias.has_value()) return nullptr;
  check_float_rows(*bias, 1, "bias");
  TORCH_CHECK(bias->is_contiguous() && bias->size(0) == out_features, "bias must have ", out_features,
              " elements, got ", bias->sizes());
  return bias->data_ptr<float>();
}

// A paged KV cache: contiguous CPU [blocks, block_size, kv_heads, head_dim], float32 or bfloat16.
inline void check_cache(const torch::Tensor& cache, const char* name) {
  const auto dtype = cache.scalar_type();
  TORCH_CHECK(cache.device().is_cpu() && (dtype == torch::kFloat32 || dtype == torch::kBFloat16) && cache.dim() == 4 &&
                  cache.is_contiguous(),
              name, " must be a contiguous CPU float32 or bfloat16 tensor [blocks, block_size, kv_heads, head_dim], got ",
              dtype, " ", cache.sizes());
}

// f(T{}) with T the cache's element type: float, or uint16_t (a bfloat16's bits) for bfloat16.
template <typename F>
decltype(auto) with_cache_type(const torch::Tensor& cache, F&& f) {
  if (cache.scalar_type() == torch::kBFloat16) return f(uint16_t{});
  return f(float{});
}

template <typename T>
T* cache_data(const torch::Tensor& cache) {
  return reinterpret_cast<T*>(cache.data_ptr());
}

}  // namespace loomlm::ops
