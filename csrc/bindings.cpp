// The Python module loomlm._C: the ops of torch_ops.h and the fused decode stack.
#include <torch/extension.h>

#include "decode_stack.h"
#include "quant_kernels.h"
#include "torch_ops.h"

namespace ops = loomlm::ops;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "loomlm's CPU kernels: block-quantized linear layers and the float32 per-layer ops";
  m.def("q4_1_linear", &ops::q4_1_linear, "x [rows, in] float32 @ packed Q4_1 W^T -> [rows, out]", py::arg("x"),
        py::arg("qs"), py::arg("scales"), py::arg("mins"), py::arg("isa") = "auto");
  m.def("q8_0_linear", &ops::q8_0_linear, "x [rows, in] float32 @ packed Q8_0 W^T -> [rows, out]", py::arg("x"),
        py::arg("qs"), py::arg("scales"), py::arg("isa") = "auto");
  m.def("int8_linear", &ops::int8_linear, "per-channel int8 layer with per-row int8 activations", py::arg("x"),
        py::arg("qweight"), py::arg("w_scale"), py::arg("inv_smooth"), py::arg("bias"), py::arg("kernel") = "auto");
  m.def("int8_kernel", &ops::int8_kernel, "the int8 GEMM int8_linear runs by default on this CPU");
  m.def("lora_slots_apply", &ops::lora_slots_apply, "LoRA of decode-sized token groups, added into out",
        py::arg("x"), py::arg("out"), py::arg("rows"), py::arg("token_ids"), py::arg("starts"), py::arg("info"),
        py::arg("scales") = py::none(), py::arg("isa") = "auto", py::arg("int8_activations") = false);
  m.def("f32_panel_gemm_supported", &ops::f32_panel_gemm_supported, "whether this CPU runs f32_panel_linear");
  m.def("f32_pack_panels", &ops::f32_pack_panels, "[in, out] float32 weight -> panels [ceil(out/16), in, 16]",
        py::arg("weight_t"));
  m.def("f32_panel_linear", &ops::f32_panel_linear, "x [rows, in] float32 @ panel-packed W (+ bias) -> [rows, out]",
        py::arg("x"), py::arg("panels"), py::arg("bias"), py::arg("out_features"));
  m.def("f32_pack_gate_up_panels", &ops::f32_pack_gate_up_panels,
        "[in, 2I] float32 gate | up weight -> panels [ceil(I/8), in, 16] (8 gate, then 8 up columns)",
        py::arg("weight_t"));
  m.def("f32_panel_silu_mul", &ops::f32_panel_silu_mul,
        "silu(x @ gate) * (x @ up) on f32_pack_gate_up_panels' layout -> [rows, I]", py::arg("x"),
        py::arg("panels"), py::arg("intermediate"));
  m.def("bf16_panel_gemm_supported", &ops::bf16_panel_gemm_supported, "whether this CPU runs bf16_panel_linear");
  m.def("bf16_pack_panels", &ops::bf16_pack_panels,
        "[in, out] float32 / bf16 weight -> bf16 pair panels [ceil(out/32), ceil(in/2), 32, 2]", py::arg("weight_t"));
  m.def("bf16_panel_linear", &ops::bf16_panel_linear,
        "x [rows, in] float32 (rounded to bf16) @ bf16 panels (+ bias) -> float32 [rows, out]", py::arg("x"),
        py::arg("panels"), py::arg("bias"), py::arg("out_features"));
  m.def("bf16_pack_gate_up_panels", &ops::bf16_pack_gate_up_panels,
        "[in, 2I] gate | up weight -> bf16 pair panels [ceil(I/16), ceil(in/2), 32, 2] (16 gate, then 16 up)",
        py::arg("weight_t"));
  m.def("bf16_panel_silu_mul", &ops::bf16_panel_silu_mul,
        "silu(x @ gate) * (x @ up) on bf16_pack_gate_up_panels' layout -> float32 [rows, I]", py::arg("x"),
        py::arg("panels"), py::arg("intermediate"));
  m.def("rms_norm", &ops::rms_norm, "RMSNorm of x's rows (after residual += x, in place, when given)", py::arg("x"),
        py::arg("residual"), py::arg("weight"), py::arg("eps"));
  m.def("rotary_store_kv", &ops::rotary_store_kv, "rotate q/k heads of qkv in place; write k, v to the paged cache",
        py::arg("qkv"), py::arg("cos"), py::arg("sin"), py::arg("rot_heads"), py::arg("k_head"), py::arg("kv_heads"),
        py::arg("slot_mapping"), py::arg("key_cache"), py::arg("value_cache"));
  m.def("silu_mul", &ops::silu_mul, "silu(gate) * up for gate_up [T, 2I] -> [T, I]", py::arg("gate_up"));
  m.def("decode_attention", &ops::decode_attention, "single-query attention over the paged cache", py::arg("query"),
        py::arg("key_cache"), py::arg("value_cache"), py::arg("block_tables"), py::arg("seq_lens"), py::arg("scale"));
  m.def("prefill_attention_supported", &ops::prefill_attention_supported, "whether this CPU runs prefill_attention");
  m.def("prefill_attention", &ops::prefill_attention, "causal attention of every chunk over the paged cache",
        py::arg("query"), py::arg("key_cache"), py::arg("value_cache"), py::arg("block_tables"), py::arg("seq_lens"),
        py::arg("query_start_loc"), py::arg("scale"));
  py::class_<loomlm::DecodeStack>(m, "DecodeStack")
      .def(py::init<std::vector<std::vector<torch::Tensor>>, std::vector<torch::Tensor>, std::vector<torch::Tensor>,
                    int64_t, int64_t, double, double>(),
           py::arg("layers"), py::arg("key_caches"), py::arg("value_caches"), py::arg("num_heads"),
           py::arg("num_kv_heads"), py::arg("eps"), py::arg("scale"))
      .def("run", &loomlm::DecodeStack::run, "every layer of an all-decode step", py::arg("hidden"), py::arg("cos"),
           py::arg("sin"), py::arg("slot_mapping"), py::arg("block_tables"), py::arg("seq_lens"),
           py::arg("lora") = std::vector<torch::Tensor>{}, py::arg("lora_int8_activations") = false,
           py::call_guard<py::gil_scoped_release>());
  m.def("kernel_isa", [] { return std::string(loomlm::isa_name(loomlm::best_isa())); },
        "the instruction set the block kernels run on by default");
  m.def("supported_isas", [] {
    std::vector<std::string> names;
    for (const auto isa : {loomlm::Isa::kScalar, loomlm::Isa::kAvx2, loomlm::Isa::kAvx512Vnni})
      if (loomlm::isa_supported(isa)) names.emplace_back(loomlm::isa_name(isa));
    return names;
  }, "every instruction set whose kernels this CPU can run");
}
