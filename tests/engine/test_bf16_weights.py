"""bfloat16 weights under float32 activations (``quantization="bf16"``): each layer equals the float
product of its bf16-rounded input and weight to bf16 rounding of the result, the bias adds in float32,
and every linear layer (LM head included) is swapped (LoRA on the bf16 base against PEFT: with the int8
base's, in test_quantized.py). The layers run on any CPU (emulated where it lacks bf16 instructions:
slow, still correct)."""

import pytest
import torch
from layer_support import float_layer
from test_quantized import make_engine

from loomlm.engine.models.bf16_weights import Bf16Linear, convert_to_bf16
from loomlm.engine.models.llama import Linear
from loomlm.engine.sampling_params import SamplingParams


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 7, 64])
def test_a_bf16_layer_is_the_float_product_of_its_rounded_input_and_weight(bias, rows):
    layer = float_layer(96, 80, bias=bias)
    x = torch.randn(rows, 96)
    got = Bf16Linear(layer.weight_t, layer.bias)(x)
    assert got.dtype == torch.float32 and got.shape == (rows, 80)

    product = x.bfloat16().double() @ layer.weight_t.detach().bfloat16().double()
    # The GEMM sums in float32 and hands back bf16: one rounding of the sum (8 significant bits).
    bias_term = 0 if layer.bias is None else layer.bias.detach().double()
    step = product.abs() * 2**-8 + 1e-6
    assert ((got.double() - bias_term - product).abs() <= step).all()
    # Against the float layer: within the rounding of input and weight (relative 2^-8 each) on |x||W|.
    magnitude = x.abs().double() @ layer.weight_t.detach().abs().double()
    assert ((got - layer(x)).abs().double() <= 3 * 2**-8 * magnitude + 1e-6).all()


def test_a_bf16_layer_keeps_the_bias_in_float32():
    layer = float_layer(32, 16, bias=True)
    with torch.no_grad():
        layer.weight_t.zero_()
        layer.bias.copy_(torch.linspace(1, 1 + 2**-12, 16))  # differences bf16 cannot hold
    got = Bf16Linear(layer.weight_t, layer.bias)(torch.randn(2, 32))
    assert torch.equal(got, layer.bias.detach().expand(2, -1))


def test_convert_to_bf16_swaps_every_linear_layer_and_reports_it():
    model = torch.nn.Sequential(float_layer(64, 32), torch.nn.ReLU(), float_layer(32, 8, seed=1))
    report = convert_to_bf16(model)
    assert not any(isinstance(m, Linear) for m in model.modules())
    assert sum(isinstance(m, Bf16Linear) for m in model.modules()) == 2
    assert report.startswith("bf16: 2 linear layers")


def test_an_engine_with_bf16_weights_decodes_like_the_float_engine(tiny_llama_dir):
    prompt = list(range(1000, 1024))
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    tokens = {}
    for mode in (None, "bf16"):
        engine = make_engine(tiny_llama_dir, quantization=mode)
        engine.add_request(prompt, params, prompt_token_ids=prompt)
        while engine.has_unfinished_requests():
            for output in engine.step(only_finished=True):
                tokens[mode] = output.outputs[0].token_ids
    model = engine.executor.runner.model
    assert isinstance(model.lm_head, Bf16Linear)
    assert engine.executor.runner.kernel_report.startswith("bf16:")
    agreement = sum(a == b for a, b in zip(tokens[None], tokens["bf16"], strict=True)) / len(tokens[None])
    assert agreement >= 0.75, f"bf16 weights chose float32's tokens at {agreement:.0%} of positions"
