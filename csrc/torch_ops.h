// loomlm._C's torch-facing ops (defined in torch_ops.cpp), shared by the Python bindings and the
// fused decode stack. Each raises (TORCH_CHECK) on tensors of the wrong shape, dtype or layout.
#pragma once

#include <torch/extension.h>

namespace loomlm::ops {

// x [rows, in] float32 (in padded to a multiple of 64) times packed block weights -> [rows, out].
torch::Tensor q4_1_linear(const torch::Tensor& x, const torch::Tensor& qs, const torch::Tensor& scales,
                          const torch::Tensor& mins, const std::string& isa = "auto");
torch::Tensor q8_0_linear(const torch::Tensor& x, const torch::Tensor& qs, const torch::Tensor& scales,
                          const std::string& isa = "auto");

// int8 per-channel layer: x [rows, in] float32 (times inv_smooth when it has elements), quantized
// per row, times qweight [out, in] int8 (exact int32 sums), rescaled by w_scale [out] (+ bias). kernel:
// "onednn" (torch._int_mm), "avx2" or "scalar" (loomlm's), or "auto": int8_kernel(), this CPU's best.
torch::Tensor int8_linear(const torch::Tensor& x, const torch::Tensor& qweight, const torch::Tensor& w_scale,
                          const torch::Tensor& inv_smooth, const c10::optional<torch::Tensor>& bias,
                          const std::string& kernel = "auto");
std::string int8_kernel();

// LoRA of decode-sized token groups, in place on out [T, width] (lora_torch.cpp): for slot group g,
// tokens token_ids[starts[g] : starts[g+1]] through row rows[info[g, 0]] of rank info[g, 1] holding
// info[g, 2] modules, whose (out offset, width) pairs follow in info[g, 3:]. rows: float32 in the CPU
// layout, or int8 in the packed layout of lora_ops.h with its per-slot scales. isa: the kernels,
// "auto", "avx512_vnni", "avx2" or "scalar". int8_activations (int8 rows only): the AVX-512 VNNI
// kernels quantize each token's activations to int8 too (the others keep them float32).
void lora_slots_apply(const torch::Tensor& x, torch::Tensor& out, const torch::Tensor& rows,
                      const torch::Tensor& token_ids, const torch::Tensor& starts, const torch::Tensor& info,
                      const c10::optional<torch::Tensor>& scales = c10::nullopt, const std::string& isa = "auto",
                      bool int8_activations = false);

// The float32 linear layer on AVX2 (f32_gemm.cpp): weight_t [in, out] packed once into panels
// [ceil(out / 16), in, 16]; x [rows, in] (unit stride along in) -> [rows, out] (+ bias [out]).
bool f32_panel_gemm_supported();
torch::Tensor f32_pack_panels(const torch::Tensor& weight_t);
torch::Tensor f32_panel_linear(const torch::Tensor& x, const torch::Tensor& panels,
                               const c10::optional<torch::Tensor>& bias, int64_t out_features);
// The gate_up projection and SiLU-and-multiply in one pass (f32_gemm.h: f32_panel_gemm_silu_mul):
// weight_t [in, 2I] (gate | up) packed once, then x [rows, in] -> [rows, I].
torch::Tensor f32_pack_gate_up_panels(const torch::Tensor& weight_t);
torch::Tensor f32_panel_silu_mul(const torch::Tensor& x, const torch::Tensor& panels, int64_t intermediate);

// The bfloat16-weight linear layer on AVX-512 BF16 (bf16_gemm.cpp): weight_t [in, out] (float32 or
// bf16) packed once into panels of bf16 pairs [ceil(out / 32), ceil(in / 2), 32, 2]; x [rows, in]
// float32, rounded to bf16 per call -> float32 [rows, out] (+ bias [out]), float32 sums. The gate_up
// form: [in, 2I] packed as panels of 16 gate then 16 up columns, x -> silu(x @ gate) * (x @ up).
bool bf16_panel_gemm_supported();
torch::Tensor bf16_pack_panels(const torch::Tensor& weight_t);
torch::Tensor bf16_panel_linear(const torch::Tensor& x, const torch::Tensor& panels,
                                const c10::optional<torch::Tensor>& bias, int64_t out_features);
torch::Tensor bf16_pack_gate_up_panels(const torch::Tensor& weight_t);
torch::Tensor bf16_panel_silu_mul(const torch::Tensor& x, const torch::Tensor& panels, int64_t intermediate);

torch::Tensor rms_norm(const torch::Tensor& x, const c10::optional<torch::Tensor>& residual,
                       const torch::Tensor& weight, double eps);
void rotary_store_kv(torch::Tensor& qkv, const torch::Tensor& cos, const torch::Tensor& sin, int64_t rot_heads,
                     int64_t k_head, int64_t kv_heads, const torch::Tensor& slot_mapping, torch::Tensor& key_cache,
                     torch::Tensor& value_cache);
torch::Tensor silu_mul(const torch::Tensor& gate_up);
torch::Tensor decode_attention(const torch::Tensor& query, const torch::Tensor& key_cache,
                               const torch::Tensor& value_cache, const torch::Tensor& block_tables,
                               const torch::Tensor& seq_lens, double scale);
// Causal attention of every sequence's chunk (attention_ops.cpp): sequence s's query rows are
// query_start_loc[s] .. [s + 1], its last q_len of seq_lens[s] positions, whose keys and values are in
// the cache already; rows outside every chunk are zero. Needs AVX2 and FMA (prefill_attention_supported).
bool prefill_attention_supported();
torch::Tensor prefill_attention(const torch::Tensor& query, const torch::Tensor& key_cache,
                                const torch::Tensor& value_cache, const torch::Tensor& block_tables,
                                const torch::Tensor& seq_lens, const torch::Tensor& query_start_loc, double scale);

}  // namespace loomlm::ops
