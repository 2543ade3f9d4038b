#include "decode_stack.h"

#include "torch_ops.h"

namespace loomlm {

DecodeStack::DecodeStack(std::vector<std::vector<torch::Tensor>> layers, std::vector<torch::Tensor> key_caches,
                         std::vector<torch::Tensor> value_caches, int64_t num_heads, int64_t num_kv_heads,
                         double eps, double scale)
    : layers_(std::move(layers)),
      key_caches_(std::move(key_caches)),
      value_caches_(std::move(value_caches)),
      num_heads_(num_heads),
      num_kv_heads_(num_kv_heads),
      eps_(eps),
      scale_(scale) {
  TORCH_CHECK(!layers_.empty() && layers_.size() == key_caches_.size() && layers_.size() == value_caches_.size(),
              "one KV cache pair per layer");
  for (const auto& layer : layers_) {
    TORCH_CHECK(layer.size() == kNumLayerTensors, "a layer takes ", int(kNumLayerTensors), " tensors, got ",
                layer.size());
  }
}

torch::Tensor DecodeStack::linear(const torch::Tensor& x, const std::vector<torch::Tensor>& layer, int first) const {
  const torch::Tensor &weight = layer[first], &scales = layer[first + 1], &third = layer[first + 2];
  if (scales.scalar_type() == torch::kFloat32) return ops::int8_linear(x, weight, scales, third, c10::nullopt);
  return third.numel() ? ops::q4_1_linear(x, weight, scales, third) : ops::q8_0_linear(x, weight, scales);
}

torch::Tensor DecodeStack::run(torch::Tensor hidden, const torch::Tensor& cos, const torch::Tensor& sin,
                               const torch::Tensor& slot_mapping, const torch::Tensor& block_tables,
                               const torch::Tensor& seq_lens) {
  TORCH_CHECK(hidden.dim() == 2 && hidden.is_contiguous(), "hidden must be contiguous [tokens, hidden]");
  const int64_t tokens = hidden.size(0), head_dim = key_caches_[0].size(3);
  torch::Tensor residual = hidden, x;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const auto& layer = layers_[l];
    // The pre-norm residual adds are folded into the norms: residual += x, then its norm.
    const torch::Tensor normed = l == 0 ? ops::rms_norm(residual, c10::nullopt, layer[kInputNorm], eps_)
                                        : ops::rms_norm(x, residual, layer[kInputNorm], eps_);
    torch::Tensor qkv = linear(normed, layer, kQkvQs);
    if (layer[kQkvBias].numel()) qkv.add_(layer[kQkvBias]);
    ops::rotary_store_kv(qkv, cos, sin, num_heads_ + num_kv_heads_, num_heads_, num_kv_heads_, slot_mapping,
                         key_caches_[l], value_caches_[l]);
    const torch::Tensor query = qkv.view({tokens, -1, head_dim}).narrow(1, 0, num_heads_);
    const torch::Tensor attn =
        ops::decode_attention(query, key_caches_[l], value_caches_[l], block_tables, seq_lens, scale_);
    const torch::Tensor attn_out = linear(attn.view({tokens, num_heads_ * head_dim}), layer, kOQs);
    const torch::Tensor mlp_in = ops::rms_norm(attn_out, residual, layer[kPostNorm], eps_);
    x = linear(ops::silu_mul(linear(mlp_in, layer, kGateUpQs)), layer, kDownQs);
  }
  return residual.add_(x);
}

}  // namespace loomlm
