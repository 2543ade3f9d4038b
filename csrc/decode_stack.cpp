#include "decode_stack.h"

#include "torch_ops.h"

namespace loomlm {

namespace {

// A bf16 panel layer's [out_features, fused] (decode_stack.h).
bool is_bf16(const std::vector<torch::Tensor>& layer, int first) {
  return layer[first].scalar_type() == torch::kBFloat16;
}
int64_t bf16_width(const std::vector<torch::Tensor>& layer, int first) { return layer[first + 2].data_ptr<int64_t>()[0]; }
bool bf16_fused(const std::vector<torch::Tensor>& layer, int first) {
  return is_bf16(layer, first) && layer[first + 2].data_ptr<int64_t>()[1] != 0;
}

}  // namespace

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
    for (const int first : {kQkvQs, kOQs, kGateUpQs, kDownQs}) {
      if (!is_bf16(layer, first)) continue;
      const torch::Tensor& meta = layer[first + 2];
      TORCH_CHECK(meta.scalar_type() == torch::kInt64 && meta.dim() == 1 && meta.numel() == 2 && meta.is_contiguous(),
                  "a bf16 layer's third tensor is int64 [out_features, fused], got ", meta.scalar_type(), " ",
                  meta.sizes());
      TORCH_CHECK(first == kGateUpQs || meta.data_ptr<int64_t>()[1] == 0, "only gate_up fuses with SiLU·mul");
    }
  }
}


torch::Tensor DecodeStack::linear(const torch::Tensor& x, const std::vector<torch::Tensor>& layer, int first) const {
  const torch::Tensor &weight = layer[first], &scales = layer[first + 1], &third = layer[first + 2];
  if (is_bf16(layer, first)) return ops::bf16_panel_linear(x, weight, c10::nullopt, bf16_width(layer, first));
  if (scales.scalar_type() == torch::kFloat32) return ops::int8_linear(x, weight, scales, third, c10::nullopt);
  return third.numel() ? ops::q4_1_linear(x, weight, scales, third) : ops::q8_0_linear(x, weight, scales);
}

void DecodeStack::add_lora(const torch::Tensor& x, torch::Tensor& out, int64_t l, int group,
                           const std::vector<torch::Tensor>& lora, bool int8_activations) const {
  if (lora.empty() || lora[kLoRATensors * group].numel() == 0) return;
  const torch::Tensor* t = lora.data() + kLoRATensors * group;
  const auto scales = t[1].numel() ? c10::optional<torch::Tensor>(t[1].select(0, l)) : c10::nullopt;
  ops::lora_slots_apply(x, out, t[0].select(0, l), t[2], t[3], t[4], scales, "auto", int8_activations);
}

torch::Tensor DecodeStack::gate_up_activations(const torch::Tensor& x, int64_t l,
                                               const std::vector<torch::Tensor>& lora, bool int8_activations) const {
  const auto& layer = layers_[l];
  if (bf16_fused(layer, kGateUpQs)) {
    TORCH_CHECK(lora.empty() || lora[kLoRATensors * 2].numel() == 0,
                "a gate_up fused with SiLU·mul cannot take LoRA (fuse only without adapters)");
    return ops::bf16_panel_silu_mul(x, layer[kGateUpQs], bf16_width(layer, kGateUpQs));
  }
  torch::Tensor gate_up = linear(x, layer, kGateUpQs);
  add_lora(x, gate_up, l, 2, lora, int8_activations);
  return ops::silu_mul(gate_up);
}

torch::Tensor DecodeStack::run(torch::Tensor hidden, const torch::Tensor& cos, const torch::Tensor& sin,
                               const torch::Tensor& slot_mapping, const torch::Tensor& block_tables,
                               const torch::Tensor& seq_lens, const std::vector<torch::Tensor>& lora,
                               bool lora_int8_activations) {
  TORCH_CHECK(hidden.dim() == 2 && hidden.is_contiguous(), "hidden must be contiguous [tokens, hidden]");
  TORCH_CHECK(lora.empty() || lora.size() == 4 * kLoRATensors, "lora takes ", int(kLoRATensors),
              " tensors for each of the 4 fused layers");
  for (size_t g = 0; g < lora.size(); g += kLoRATensors) {
    TORCH_CHECK(lora[g].numel() == 0 || (lora[g].dim() == 3 && lora[g].size(0) == int64_t(layers_.size())),
                "LoRA rows must be [layers, slots, row size] with one entry per decoder layer");
  }
  const int64_t tokens = hidden.size(0), head_dim = key_caches_[0].size(3);
  torch::Tensor residual = hidden, x;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const auto& layer = layers_[l];
    // The pre-norm residual adds are folded into the norms: residual += x, then its norm.
    const torch::Tensor normed = l == 0 ? ops::rms_norm(residual, c10::nullopt, layer[kInputNorm], eps_)
                                        : ops::rms_norm(x, residual, layer[kInputNorm], eps_);
    torch::Tensor qkv = linear(normed, layer, kQkvQs);
    if (layer[kQkvBias].numel()) qkv.add_(layer[kQkvBias]);
    add_lora(normed, qkv, l, 0, lora, lora_int8_activations);
    ops::rotary_store_kv(qkv, cos, sin, num_heads_ + num_kv_heads_, num_heads_, num_kv_heads_, slot_mapping,
                         key_caches_[l], value_caches_[l]);
    const torch::Tensor query = qkv.view({tokens, -1, head_dim}).narrow(1, 0, num_heads_);
    const torch::Tensor attn =
        ops::decode_attention(query, key_caches_[l], value_caches_[l], block_tables, seq_lens, scale_);
    const torch::Tensor attn_flat = attn.view({tokens, num_heads_ * head_dim});
    torch::Tensor attn_out = linear(attn_flat, layer, kOQs);
    add_lora(attn_flat, attn_out, l, 1, lora, lora_int8_activations);
    const torch::Tensor mlp_in = ops::rms_norm(attn_out, residual, layer[kPostNorm], eps_);
    const torch::Tensor hidden_mlp = gate_up_activations(mlp_in, l, lora, lora_int8_activations);
    x = linear(hidden_mlp, layer, kDownQs);
    add_lora(hidden_mlp, x, l, 3, lora, lora_int8_activations);
  }
  return residual.add_(x);
}

}  // namespace loomlm
