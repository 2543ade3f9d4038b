"""The float linear layers' kernel: each packed kernel (oneDNN's prepacked GEMM, loomlm's AVX2
panels) gives torch.mm's result (float32 rounding), the choice follows the timing per shape, and a
packed layer keeps its shape and drops its float copy. An MLP whose gate_up runs loomlm's panels
fuses SiLU·mul into it with the same output; others stay as they are."""

import pytest
import torch
from layer_support import float_layer, tiny_arch

from loomlm.engine.models import linear_kernels
from loomlm.engine.models.linear_kernels import (
    candidate_kernels,
    choose_linear_kernels,
    fuse_gate_up_activations,
)
from loomlm.engine.models.llama import LlamaMLP
from loomlm.kernels.cpu_gemm import pack_weight, packed_linear, panel_gemm_available

PACKED = [k for k in candidate_kernels(torch.float32) if k != "torch.mm"]


@pytest.mark.parametrize("kernel", PACKED)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 5, 64])
def test_each_packed_kernel_matches_torch_mm(kernel, bias, rows):
    module = float_layer(96, 200, bias)
    x = torch.randn(rows, 96)
    expected = module(x)
    packed = pack_weight(module.weight_t, kernel)
    torch.testing.assert_close(packed_linear(kernel, x, packed, module.bias, 200), expected)
    module.use_packed(pack_weight(module.weight_t, kernel), kernel)
    torch.testing.assert_close(module(x), expected)
    assert module.weight_t.shape == (96, 200) and module.weight_t.untyped_storage().nbytes() == 4


@pytest.mark.skipif(len(PACKED) < 2, reason="needs oneDNN and loomlm's AVX2 kernel")
@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ({"torch.mm": 1.0, "onednn": 0.5, "loomlm": 0.4}, "loomlm"),
        ({"torch.mm": 1.0, "onednn": 0.5, "loomlm": 0.6}, "onednn"),
        ({"torch.mm": 1.0, "onednn": 0.95, "loomlm": 0.93}, "torch.mm"),  # within the noise margin
    ],
)
def test_each_shape_takes_the_kernel_measured_fastest(monkeypatch, relative, expected):
    model = torch.nn.Sequential(float_layer(32, 64), float_layer(64, 32, seed=1), float_layer(32, 64, seed=2))
    x = torch.randn(3, 32)
    before = model(x)
    monkeypatch.setattr(linear_kernels, "_relative_times", lambda layer, kernels, packs, dtype: relative)
    choices = choose_linear_kernels(model, torch.device("cpu"), torch.float32)
    assert choices == {(32, 64): expected, (64, 32): expected}
    assert all(m.kernel == expected and (m.packed is not None) == (expected != "torch.mm") for m in model)
    torch.testing.assert_close(model(x), before)


def test_loomlm_panels_are_a_float32_candidate_only():
    assert "loomlm" not in candidate_kernels(torch.bfloat16)


def test_nothing_is_chosen_off_the_cpu_or_for_other_dtypes():
    model = torch.nn.Sequential(float_layer(8, 8))
    assert choose_linear_kernels(model, torch.device("cpu"), torch.float16) == {}
    assert choose_linear_kernels(model, torch.device("meta"), torch.float32) == {}
    assert model[0].packed is None


def small_mlp(seed: int) -> LlamaMLP:
    # intermediate 52 is not a multiple of 8: a partial last gate_up panel
    arch = tiny_arch(hidden_size=40, intermediate_size=52, head_dim=10)
    torch.manual_seed(seed)
    mlp = LlamaMLP(arch)
    with torch.no_grad():
        for layer in (mlp.gate_up_proj, mlp.down_proj):
            layer.weight_t.normal_(0, 0.1)
    return mlp


@pytest.mark.skipif(not panel_gemm_available(), reason="needs loomlm's AVX2 kernel")
def test_an_mlp_on_loomlm_panels_fuses_silu_mul_with_the_same_output():
    on_panels, on_torch_mm = small_mlp(0), small_mlp(1)
    on_panels.gate_up_proj.use_packed(pack_weight(on_panels.gate_up_proj.weight_t, "loomlm"), "loomlm")
    x = torch.randn(9, 40)
    before = [on_panels(x), on_torch_mm(x)]
    assert fuse_gate_up_activations(torch.nn.Sequential(on_panels, on_torch_mm)) == 1
    assert on_panels.gate_up_silu_mul is not None and not hasattr(on_panels, "gate_up_proj")
    assert on_torch_mm.gate_up_silu_mul is None  # torch.mm's layer is left alone
    assert torch.equal(on_panels(x), before[0]) and torch.equal(on_torch_mm(x), before[1])
    assert fuse_gate_up_activations(on_panels) == 0  # already fused
    with pytest.raises(ValueError, match="loomlm's panels"):
        on_torch_mm.fuse_gate_up()
