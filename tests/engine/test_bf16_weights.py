"""bfloat16 weights under float32 activations (``quantization="bf16"``): each layer equals the float
product of its bf16-rounded input and weight to bf16 rounding of the result, on every kernel this CPU
runs, the bias adds in float32, and every linear layer (LM head included) is swapped (LoRA on the bf16
base against PEFT: with the int8 base's, in test_quantized.py). On loomlm's panels a gate_up fuses
with SiLU·mul to the same output and an engine without adapters decodes in the fused stack (equal to
the module path: test_fused_decode.py). The layers run on any CPU (emulated where it lacks bf16
instructions: slow, still correct)."""

import pytest
import torch
from greedy_support import assert_teacher_forced_near, greedy_reference
from layer_support import float_layer, tiny_arch
from test_quantized import make_engine

from loomlm.engine.config import EngineConfig
from loomlm.engine.engine import LLMEngine
from loomlm.engine.models import bf16_weights
from loomlm.engine.models.bf16_weights import Bf16Linear, available_bf16_kernels, convert_to_bf16
from loomlm.engine.models.linear_kernels import fuse_gate_up_activations
from loomlm.engine.models.llama import Linear, LlamaMLP
from loomlm.kernels.cpu_gemm_bf16 import bf16_panels_available


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
    reference = greedy_reference(make_engine(tiny_llama_dir), prompt)
    engine = make_engine(tiny_llama_dir, quantization="bf16")
    assert isinstance(engine.executor.runner.model.lm_head, Bf16Linear)
    assert engine.executor.runner.kernel_report.startswith("bf16:")
    assert_teacher_forced_near(engine, prompt, reference, min_equal=9)


needs_panels = pytest.mark.skipif(
    not bf16_panels_available(), reason="loomlm's bf16 panels need loomlm._C and AVX-512 BF16"
)


@pytest.mark.parametrize("kernel", available_bf16_kernels())
def test_every_kernel_here_gives_the_rounded_product(kernel):
    layer = float_layer(96, 80, bias=True)
    x = torch.randn(9, 96)
    got = Bf16Linear(layer.weight_t, layer.bias, kernel)(x)
    product = x.bfloat16().double() @ layer.weight_t.detach().bfloat16().double()
    # oneDNN hands back bf16 (one rounding of the sum); loomlm's panels float32.
    error = (got.double() - layer.bias.detach().double() - product).abs()
    assert (error <= product.abs() * 2**-8 + 1e-5).all()


def test_a_kernel_this_cpu_cannot_run_is_refused():
    layer = float_layer(32, 16)
    with pytest.raises(ValueError, match="cannot run here"):
        Bf16Linear(layer.weight_t, None, "cuda-tensor-cores")


@needs_panels
def test_the_gate_up_of_a_bf16_mlp_fuses_with_silu_mul_with_the_same_output(monkeypatch):
    monkeypatch.setattr(bf16_weights, "_fastest_kernel", lambda shape: "loomlm")  # the fusions' kernel
    torch.manual_seed(0)
    mlp = LlamaMLP(tiny_arch(hidden_size=40, intermediate_size=24))
    for linear in (mlp.gate_up_proj, mlp.down_proj):
        torch.nn.init.normal_(linear.weight_t, std=0.2)
    convert_to_bf16(mlp)
    x = torch.randn(13, 40)
    before = mlp(x)
    assert mlp.gate_up_proj.can_fuse_silu_mul
    assert fuse_gate_up_activations(mlp) == 1
    assert not hasattr(mlp, "gate_up_proj") and mlp.gate_up_silu_mul is not None
    assert torch.equal(mlp(x), before)


@needs_panels
def test_a_bf16_engine_fuses_gate_up_and_decodes_in_the_stack_without_adapters(tiny_llama_dir, monkeypatch):
    # Pinned to loomlm's panels (the fusions' kernel): the per-shape timing at load is not under test.
    monkeypatch.setattr(bf16_weights, "_fastest_kernel", lambda shape: "loomlm")
    engine = LLMEngine(EngineConfig(model=str(tiny_llama_dir), quantization="bf16"))  # no LoRA
    report = engine.executor.runner.kernel_report
    assert "loomlm" in report and "SiLU·mul" in report and "fused C++ call" in report
    assert engine.executor.runner.fused_decode is not None
