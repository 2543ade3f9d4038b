"""loomlm's float32 GEMM on AVX2 panels equals its torch reference (float32 rounding) for every row
count a step has (register-tile tails, blocks of rows and of K), widths that are not multiples of
16, a bias, strided rows and more than one thread; the reference packing is the C++ packing; bad
tensors raise before any work. The gate_up GEMM fused with SiLU-and-multiply equals the two ops
it replaces bit for bit."""

import pytest
import torch

from loomlm.kernels import cpu_gemm
from loomlm.kernels.native import _C

needs_kernel = pytest.mark.skipif(
    not cpu_gemm.panel_gemm_available(), reason="loomlm._C not built, or this CPU has no AVX2/FMA"
)


def layer(in_features, out_features, bias, seed=0):
    torch.manual_seed(seed)
    weight_t = torch.randn(in_features, out_features) * 0.05
    return weight_t, (torch.randn(out_features) if bias else None)


def expected(x, weight_t, bias):
    out = x.double() @ weight_t.double()
    return (out if bias is None else out + bias.double()).float()


@needs_kernel
@pytest.mark.parametrize("rows", [1, 5, 6, 7, 64, 97, 200])
@pytest.mark.parametrize(("in_features", "out_features"), [(96, 200), (576, 960), (1600, 48), (3, 17)])
@pytest.mark.parametrize("bias", [False, True])
def test_panels_equal_the_float64_product(rows, in_features, out_features, bias):
    weight_t, b = layer(in_features, out_features, bias)
    panels = cpu_gemm.pack_weight(weight_t, "loomlm")
    x = torch.randn(rows, in_features)
    got = cpu_gemm.packed_linear("loomlm", x, panels, b, out_features)
    torch.testing.assert_close(got, expected(x, weight_t, b), rtol=1e-5, atol=1e-4)
    reference = cpu_gemm.panel_linear_ref(x, panels, b, out_features)
    torch.testing.assert_close(reference, got, rtol=1e-5, atol=1e-4)


@needs_kernel
def test_the_reference_packing_is_the_kernels_packing():
    weight_t, _ = layer(40, 37, False)
    packed = _C.f32_pack_panels(weight_t)
    assert packed.shape == (3, 40, 16)
    assert torch.equal(packed, cpu_gemm.pack_panels_ref(weight_t))
    assert torch.equal(packed[2, :, 5:], torch.zeros(40, 11))  # columns past out are zero


@needs_kernel
@pytest.mark.parametrize("threads", [1, 3])
def test_strided_rows_and_thread_counts(threads):
    weight_t, b = layer(128, 80, True)
    panels = cpu_gemm.pack_weight(weight_t, "loomlm")
    wide = torch.randn(13, 300)
    x = wide[:, 50:178]  # rows 300 floats apart
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = cpu_gemm.packed_linear("loomlm", x, panels, b, 80)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(got, expected(x, weight_t, b), rtol=1e-5, atol=1e-4)


@needs_kernel
def test_empty_inputs():
    weight_t, b = layer(8, 20, True)
    panels = cpu_gemm.pack_weight(weight_t, "loomlm")
    assert cpu_gemm.packed_linear("loomlm", torch.empty(0, 8), panels, b, 20).shape == (0, 20)
    no_depth = _C.f32_pack_panels(torch.empty(0, 20))
    torch.testing.assert_close(_C.f32_panel_linear(torch.empty(2, 0), no_depth, b, 20), b.expand(2, 20))


@needs_kernel
def test_bad_tensors_raise_naming_the_problem():
    weight_t, b = layer(32, 40, True)
    panels = cpu_gemm.pack_weight(weight_t, "loomlm")
    x = torch.randn(4, 32)
    with pytest.raises(RuntimeError, match="panels must be"):
        _C.f32_panel_linear(torch.randn(4, 31), panels, b, 40)
    with pytest.raises(RuntimeError, match="out_features 64 does not match 3 panels"):
        _C.f32_panel_linear(x, panels, None, 64)
    with pytest.raises(RuntimeError, match="bias must have 40"):
        _C.f32_panel_linear(x, panels, torch.randn(39), 40)
    with pytest.raises(RuntimeError, match="float32"):
        _C.f32_panel_linear(x.double(), panels, b, 40)


def test_an_unknown_packed_kernel_is_a_value_error():
    with pytest.raises(ValueError, match=r"no packed layout for linear kernel 'torch\.mm' here"):
        cpu_gemm.pack_weight(torch.randn(4, 4), "torch.mm")


@needs_kernel
@pytest.mark.parametrize("rows", [1, 6, 7, 97, 200])
# intermediate sizes of whole and partial 8-column panels; 1000 inputs take two K blocks
@pytest.mark.parametrize(("in_features", "intermediate"), [(576, 1536), (96, 20), (1000, 8), (5, 3)])
def test_fused_gate_up_equals_the_gemm_then_silu_mul(rows, in_features, intermediate):
    weight_t, _ = layer(in_features, 2 * intermediate, False, seed=rows)
    x = torch.randn(rows, in_features)
    fused = cpu_gemm.gate_up_silu_mul(x, cpu_gemm.pack_gate_up(weight_t), intermediate)
    panels = cpu_gemm.pack_weight(weight_t, "loomlm")
    product = cpu_gemm.packed_linear("loomlm", x, panels, None, 2 * intermediate)
    assert torch.equal(fused, _C.silu_mul(product))  # the same sums, the same activation
    reference = cpu_gemm.gate_up_silu_mul_ref(x, cpu_gemm.pack_gate_up(weight_t), intermediate)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_the_reference_gate_up_packing_is_the_kernels():
    weight_t, _ = layer(12, 2 * 11, False)
    packed = cpu_gemm.pack_gate_up(weight_t)
    assert packed.shape == (2, 12, 16)
    assert torch.equal(packed, cpu_gemm.pack_gate_up_ref(weight_t))
    assert torch.equal(packed[0, :, :8], weight_t[:, :8])  # gate columns 0-7, then up columns 0-7
    assert torch.equal(packed[0, :, 8:], weight_t[:, 11:19])
    assert torch.equal(packed[1, :, 3:8], torch.zeros(12, 5))  # past the 11 gate columns: zero


@needs_kernel
def test_fused_gate_up_refuses_mismatched_tensors():
    packed = cpu_gemm.pack_gate_up(torch.randn(16, 40))
    with pytest.raises(RuntimeError, match="does not match"):
        cpu_gemm.gate_up_silu_mul(torch.randn(2, 16), packed, 30)
    with pytest.raises(RuntimeError, match="panels must be"):
        cpu_gemm.gate_up_silu_mul(torch.randn(2, 15), packed, 20)
    with pytest.raises(RuntimeError, match="even number of columns"):
        cpu_gemm.pack_gate_up(torch.randn(16, 41))
