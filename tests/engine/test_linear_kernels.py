"""The float32 linear layers' kernel: oneDNN's prepacked GEMM gives torch.mm's result (float32
rounding), the choice follows the timing per shape, and a packed layer keeps its shape and drops
its float copy."""

import pytest
import torch
from layer_support import float_layer

from loomlm.engine.models import linear_kernels
from loomlm.engine.models.linear_kernels import (
    choose_linear_kernels,
    onednn_available,
    onednn_linear,
    pack_weight,
)

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 5, 64])
def test_onednn_matches_torch_mm(bias, rows):
    module = float_layer(96, 200, bias)
    x = torch.randn(rows, 96)
    expected = module(x)
    torch.testing.assert_close(onednn_linear(x, pack_weight(module.weight_t), module.bias), expected)
    module.use_packed(pack_weight(module.weight_t))
    torch.testing.assert_close(module(x), expected)
    assert module.weight_t.shape == (96, 200) and module.weight_t.untyped_storage().nbytes() == 4


@pytest.mark.parametrize(("mm_s", "dnn_s", "expected"), [(1.0, 0.5, "onednn"), (1.0, 0.95, "torch.mm")])
def test_each_shape_takes_the_kernel_measured_faster(monkeypatch, mm_s, dnn_s, expected):
    model = torch.nn.Sequential(float_layer(32, 64), float_layer(64, 32, seed=1), float_layer(32, 64, seed=2))
    x = torch.randn(3, 32)
    before = model(x)
    monkeypatch.setattr(linear_kernels, "_time", lambda fn, *a: dnn_s if hasattr(fn, "keywords") else mm_s)
    choices = choose_linear_kernels(model, torch.device("cpu"), torch.float32)
    assert choices == {(32, 64): expected, (64, 32): expected}
    assert all((m.packed is not None) == (expected == "onednn") for m in model)
    torch.testing.assert_close(model(x), before)


def test_nothing_is_chosen_off_the_cpu_or_for_other_dtypes():
    model = torch.nn.Sequential(float_layer(8, 8))
    assert choose_linear_kernels(model, torch.device("cpu"), torch.float16) == {}
    assert choose_linear_kernels(model, torch.device("meta"), torch.float32) == {}
    assert model[0].packed is None
