"""The float linear layers' kernel: each packed kernel (oneDNN's prepacked GEMM, loomlm's AVX2
panels) gives torch.mm's result (float32 rounding), the choice follows the timing per shape, and a
packed layer keeps its shape and drops its float copy."""

import pytest
import torch
from layer_support import float_layer

from loomlm.engine.models import linear_kernels
from loomlm.engine.models.linear_kernels import candidate_kernels, choose_linear_kernels
from loomlm.kernels.cpu_gemm import pack_weight, packed_linear

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
    ("seconds", "expected"),
    [
        ({"torch.mm": 1.0, "onednn": 0.5, "loomlm": 0.4}, "loomlm"),
        ({"torch.mm": 1.0, "onednn": 0.5, "loomlm": 0.6}, "onednn"),
        ({"torch.mm": 1.0, "onednn": 0.95, "loomlm": 0.93}, "torch.mm"),  # within the noise margin
    ],
)
def test_each_shape_takes_the_kernel_measured_fastest(monkeypatch, seconds, expected):
    model = torch.nn.Sequential(float_layer(32, 64), float_layer(64, 32, seed=1), float_layer(32, 64, seed=2))
    x = torch.randn(3, 32)
    before = model(x)
    monkeypatch.setattr(linear_kernels, "_seconds", lambda layer, kernels, packs, dtype: seconds)
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
