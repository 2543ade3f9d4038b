"""Block-quantized modes (``quantization="int4"`` / ``"q8_0"``): every linear layer is swapped for
blocks in the mode's formats, LoRA on the quantized base follows PEFT on the dequantized base, and
the default model runs its GGUF's own blocks, bit for bit."""

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_quantized import make_engine

from loomlm.engine.config import EngineConfig
from loomlm.engine.engine import LLMEngine
from loomlm.engine.models.block_quant import BlockQuantLinear, quantize_blocks
from loomlm.engine.models.llama import Linear
from loomlm.engine.sampling_params import SamplingParams
from loomlm.kernels import quant_linear as ql


@pytest.mark.parametrize(("mode", "linear_fmt"), [("int4", "q4_1"), ("q8_0", "q8_0")])
def test_every_linear_layer_becomes_blocks_in_the_modes_formats(tiny_llama_dir, mode, linear_fmt):
    model = make_engine(tiny_llama_dir, quantization=mode).executor.runner.model
    assert not any(isinstance(m, Linear) for m in model.modules())
    layers = [m for m in model.layers.modules() if isinstance(m, BlockQuantLinear)]
    assert len(layers) == 4 * 2 and all(m.packed.fmt == linear_fmt for m in layers)
    assert model.lm_head.packed.fmt == "q8_0"


def test_a_layer_whose_width_does_not_split_into_blocks_stays_float():
    model = torch.nn.Sequential(Linear(64, 8), Linear(40, 8))
    account = quantize_blocks(model, "int4", None)
    assert isinstance(model[0], BlockQuantLinear) and isinstance(model[1], Linear)
    assert "1 kept float" in account and "1 quantized from float" in account


def dequantized_checkpoint(model_dir, out_dir):
    """``model_dir`` with every weight the int4 mode quantizes replaced by its dequantized blocks
    (Q4_1 for the linear layers, Q8_0 for the tied embedding / LM head): PEFT's base there is
    exactly the weights the int4 engine multiplies."""
    shutil.copytree(model_dir, out_dir)
    state = load_file(out_dir / "model.safetensors")
    for name, tensor in state.items():
        if name.endswith("proj.weight"):
            state[name] = ql.dequantize_q4_1(ql.quantize_q4_1(tensor))
        elif name == "model.embed_tokens.weight":
            state[name] = ql.dequantize_q8_0(ql.quantize_q8_0(tensor))
    save_file(state, out_dir / "model.safetensors", {"format": "pt"})
    return out_dir


def test_lora_on_the_int4_base_follows_peft_on_the_dequantized_base(
    tiny_llama_dir, tiny_lora_adapters, peft_logits, tmp_path
):
    base = dequantized_checkpoint(tiny_llama_dir, tmp_path / "dequantized")
    engine = make_engine(base, quantization="int4")
    engine.load_adapter("all8", str(tiny_lora_adapters["all8"]))
    prompt = list(range(1000, 1024))
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=0)
    engine.add_request(prompt, params, prompt_token_ids=prompt, adapter="all8")
    tokens = []
    while engine.has_unfinished_requests():
        for output in engine.step(only_finished=True):
            tokens = output.outputs[0].token_ids
    reference = peft_logits(base, tiny_lora_adapters["all8"], prompt + tokens[:-1])[len(prompt) - 1 :]
    # The weights are PEFT's exactly; only the int8 activation rounding differs.
    agreement = (reference.argmax(-1) == torch.tensor(tokens)).float().mean()
    assert agreement >= 0.9, f"int4 + LoRA chose PEFT's argmax at {agreement:.0%} of positions"


def test_int4_and_q8_0_need_the_cpu_and_float32():
    for mode in ("int4", "q8_0"):
        with pytest.raises(ValueError, match="float32"):
            EngineConfig(quantization=mode, dtype="bfloat16")


@pytest.mark.slow
def test_the_default_model_runs_its_ggufs_own_blocks(smollm2_dir):
    from loomlm.engine.models.gguf_blocks import read_default_blocks
    from loomlm.engine.models.loader import load_model

    model, arch, _ = load_model(smollm2_dir)
    blocks = read_default_blocks(smollm2_dir, arch)
    assert len(blocks) == 4 * arch.num_layers + 1
    modules = dict(model.named_modules())
    dequantize = {"q4_1": ql.dequantize_q4_1, "q8_0": ql.dequantize_q8_0}
    for name, (rows, fmt) in blocks.items():
        assert fmt == ("q8_0" if name == "lm_head" else "q4_1")
        # The float checkpoint is these blocks dequantized (q/k rows un-permuted, parts stacked) ...
        assert torch.equal(dequantize[fmt](rows), modules[name].weight_t.t()), name
    # ... and the engine takes them as they are.
    engine = LLMEngine(EngineConfig(model=str(smollm2_dir), quantization="int4"))
    taken = engine.executor.runner.model.layers[0].self_attn.qkv_proj.packed
    reference = ql.pack_blocks(blocks["layers.0.self_attn.qkv_proj"][0], "q4_1", arch.hidden_size)
    assert torch.equal(taken.qs, reference.qs) and torch.equal(taken.scales, reference.scales)
