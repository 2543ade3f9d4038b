// DecodeStack: every decoder layer of an all-decode step in one call, for a model whose linear
// layers are quantized (int4 / q8_0 blocks, int8, or bf16 panels), on one rank; with LoRA adapters where every
// slot of the step runs the C++ LoRA path (lora_slots_apply). At batch 1 the per-layer Python around
// the kernels cost as much as the kernels (about 40 calls a layer); this runs the same ops
// (torch_ops.h) in the same order as the Python layers do, from C++.
#pragma once

#include <torch/extension.h>

#include <vector>

namespace loomlm {

// One layer's tensors, in this order (built by loomlm/engine/models/fused_decode.py). A linear
// layer is three tensors: packed blocks (qs, fp16 scales, mins: empty for Q8_0, else Q4_1), an int8
// per-channel layer (qweight, float32 w_scale, inv_smooth: empty for none), or bf16 panels (panels,
// empty, int64 [out_features, fused]: fused 1 for a gate_up packed with SiLU·mul, whose
// out_features is the intermediate size). An empty bias is no bias.
enum LayerTensor : int {
  kInputNorm,
  kPostNorm,
  kQkvQs, kQkvScales, kQkvMins, kQkvBias,
  kOQs, kOScales, kOMins,
  kGateUpQs, kGateUpScales, kGateUpMins,
  kDownQs, kDownScales, kDownMins,
  kNumLayerTensors,
};

constexpr int kLoRATensors = 5;  // per fused layer: rows, scales, token_ids, starts, info

class DecodeStack {
 public:
  DecodeStack(std::vector<std::vector<torch::Tensor>> layers, std::vector<torch::Tensor> key_caches,
              std::vector<torch::Tensor> value_caches, int64_t num_heads, int64_t num_kv_heads, double eps,
              double scale);

  // hidden: the step's embeddings [T, hidden] (T decode tokens, row t is sequence t; taken over as
  // the residual stream). Returns the last layer's output plus the stream: the final norm's input.
  // lora: empty (no adapter in the step), or kLoRATensors per fused linear layer (qkv, o, gate_up,
  // down, in that order): its every-layer slot rows [layers, slots, row size] (float32, or int8 with
  // their scales [layers, slots, n]; empty scales for float32) and the step's plan (token_ids, starts,
  // info: lora_slots_apply's); empty rows for a layer no adapter targets. lora_int8_activations: as
  // lora_slots_apply's int8_activations.
  torch::Tensor run(torch::Tensor hidden, const torch::Tensor& cos, const torch::Tensor& sin,
                    const torch::Tensor& slot_mapping, const torch::Tensor& block_tables,
                    const torch::Tensor& seq_lens, const std::vector<torch::Tensor>& lora,
                    bool lora_int8_activations = false);

 private:
  torch::Tensor linear(const torch::Tensor& x, const std::vector<torch::Tensor>& layer, int first) const;
  // The MLP's hidden activations silu(gate) * up of decoder layer `l` for input x, with the adapters'
  // gate_up update added before the activation.
  torch::Tensor gate_up_activations(const torch::Tensor& x, int64_t l, const std::vector<torch::Tensor>& lora,
                                    bool int8_activations) const;
  // out += the adapters' update of fused linear layer `group` (0..3) of decoder layer `l`.
  void add_lora(const torch::Tensor& x, torch::Tensor& out, int64_t l, int group,
                const std::vector<torch::Tensor>& lora, bool int8_activations) const;

  std::vector<std::vector<torch::Tensor>> layers_;
  std::vector<torch::Tensor> key_caches_, value_caches_;
  int64_t num_heads_, num_kv_heads_;
  double eps_, scale_;
};

}  // namespace loomlm
