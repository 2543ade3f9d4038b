"""loomlm's bf16-weight GEMM (AVX-512 BF16 panels of bf16 pairs) is the float32 product of the
bf16-rounded input and weight, to float32 summation: for every row count a step has (tile heights up
to 12, blocks of 96 rows), odd input widths, widths that are not multiples of 32, a bias, strided rows
and more than one thread. The torch reference packing is the C++ packing, the unpacking inverts it,
and the gate_up GEMM fused with SiLU-and-multiply equals the two ops it replaces bit for bit. Bad
tensors raise before any work."""

import pytest
import torch

from loomlm.kernels import cpu_gemm_bf16 as bf16
from loomlm.kernels.cpu_ops import silu_mul

needs_kernel = pytest.mark.skipif(
    not bf16.bf16_panels_available(), reason="loomlm._C not built, or this CPU has no AVX-512 BF16"
)


def layer(in_features, out_features, bias, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weight_t = torch.randn(in_features, out_features, generator=generator) * 0.05
    return weight_t, (torch.randn(out_features, generator=generator) if bias else None)


def rounded_product(x, weight_t, bias):
    """The exact product of the bf16-rounded operands (float64), and its magnitude |x| @ |W|."""
    xb, wb = x.bfloat16().double(), weight_t.bfloat16().double()
    out = xb @ wb
    return (out if bias is None else out + bias.double()), xb.abs() @ wb.abs()


@pytest.mark.parametrize(("in_features", "out_features"), [(96, 200), (7, 33), (64, 32), (1, 1)])
def test_the_reference_packing_round_trips(in_features, out_features):
    weight_t, _ = layer(in_features, out_features, False)
    packed = bf16.pack_bf16_panels_ref(weight_t)
    assert packed.shape == (-(-out_features // 32), -(-in_features // 2), 32, 2)
    assert torch.equal(bf16.unpack_bf16_panels(packed, in_features, out_features), weight_t.bfloat16())


@needs_kernel
@pytest.mark.parametrize(("in_features", "out_features"), [(96, 200), (7, 33), (576, 960), (64, 32)])
def test_the_reference_packings_are_the_cpp_packings(in_features, out_features):
    weight_t, _ = layer(in_features, out_features, False)
    assert torch.equal(bf16.pack_bf16_panels(weight_t), bf16.pack_bf16_panels_ref(weight_t))
    assert torch.equal(bf16.pack_bf16_panels(weight_t.bfloat16()), bf16.pack_bf16_panels_ref(weight_t))
    gate_up, _ = layer(in_features, 2 * out_features, False)
    assert torch.equal(bf16.pack_bf16_gate_up(gate_up), bf16.pack_bf16_gate_up_ref(gate_up))


@needs_kernel
@pytest.mark.parametrize("rows", [1, 2, 4, 5, 12, 13, 31, 96, 100, 250])
@pytest.mark.parametrize(("in_features", "out_features"), [(96, 200), (576, 960), (1537, 48), (3, 17)])
@pytest.mark.parametrize("bias", [False, True])
def test_panels_equal_the_product_of_the_rounded_operands(rows, in_features, out_features, bias):
    weight_t, b = layer(in_features, out_features, bias)
    panels = bf16.pack_bf16_panels(weight_t)
    x = torch.randn(rows, in_features)
    got = bf16.bf16_panel_linear(x, panels, b, out_features)
    assert got.dtype == torch.float32 and got.shape == (rows, out_features)
    want, magnitude = rounded_product(x, weight_t, b)
    # bf16 products are exact in float32: only the float32 sums round (an input rounded any other way
    # than to nearest even would be off by ~2^-9 of the magnitude).
    assert ((got.double() - want).abs() <= 2e-6 * magnitude + 1e-6).all()
    reference = bf16.bf16_panel_linear_ref(x, panels, b, out_features)
    assert ((got - reference).abs().double() <= 2e-6 * magnitude + 1e-6).all()


@needs_kernel
def test_strided_rows_and_threads_give_the_same_result():
    weight_t, b = layer(200, 300, True)
    panels = bf16.pack_bf16_panels(weight_t)
    wide = torch.randn(40, 260)
    x = wide[:, 30:230]  # rows 260 floats apart
    got = bf16.bf16_panel_linear(x, panels, b, 300)
    assert torch.equal(got, bf16.bf16_panel_linear(x.contiguous(), panels, b, 300))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(got, bf16.bf16_panel_linear(x, panels, b, 300))
    finally:
        torch.set_num_threads(threads)


@needs_kernel
@pytest.mark.parametrize("rows", [1, 9, 12, 100])
@pytest.mark.parametrize(("in_features", "intermediate"), [(96, 40), (576, 1536), (33, 16)])
def test_gate_up_fused_with_silu_mul_equals_the_two_ops_bit_for_bit(rows, in_features, intermediate):
    weight_t, _ = layer(in_features, 2 * intermediate, False)
    x = torch.randn(rows, in_features)
    plain = bf16.bf16_panel_linear(x, bf16.pack_bf16_panels(weight_t), None, 2 * intermediate)
    fused = bf16.bf16_gate_up_silu_mul(x, bf16.pack_bf16_gate_up(weight_t), intermediate)
    assert torch.equal(fused, silu_mul(plain))
    reference = bf16.bf16_gate_up_silu_mul_ref(x, bf16.pack_bf16_gate_up_ref(weight_t), intermediate)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_empty_inputs_and_zero_width_inputs():
    weight_t, b = layer(64, 40, True)
    panels = bf16.pack_bf16_panels(weight_t)
    assert bf16.bf16_panel_linear(torch.empty(0, 64), panels, b, 40).shape == (0, 40)
    empty_in = bf16.pack_bf16_panels(torch.empty(0, 40))
    assert torch.equal(bf16.bf16_panel_linear(torch.empty(3, 0), empty_in, b, 40), b.expand(3, -1))


@needs_kernel
def test_bad_tensors_raise_naming_the_problem():
    weight_t, _ = layer(64, 40, False)
    panels = bf16.pack_bf16_panels(weight_t)
    with pytest.raises(RuntimeError, match="panels must be contiguous bfloat16"):
        bf16.bf16_panel_linear(torch.randn(2, 62), panels, None, 40)  # another input width
    with pytest.raises(RuntimeError, match="panels must be contiguous bfloat16"):
        bf16.bf16_panel_linear(torch.randn(2, 64), panels.float(), None, 40)
    with pytest.raises(RuntimeError, match="out_features 80 does not match 2 panels"):
        bf16.bf16_panel_linear(torch.randn(2, 64), panels, None, 80)
    with pytest.raises(RuntimeError, match="bias must have 40 elements"):
        bf16.bf16_panel_linear(torch.randn(2, 64), panels, torch.zeros(41), 40)
    with pytest.raises(RuntimeError, match="x must be a CPU float32"):
        bf16.bf16_panel_linear(torch.randn(2, 64).double(), panels, None, 40)
    with pytest.raises(RuntimeError, match="even number of columns"):
        bf16.pack_bf16_gate_up(torch.randn(64, 41))
    with pytest.raises(RuntimeError, match="intermediate size 40 does not match"):
        bf16.bf16_gate_up_silu_mul(torch.randn(2, 64), bf16.pack_bf16_gate_up(torch.randn(64, 40)), 40)
