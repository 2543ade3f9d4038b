"""Block-quantized linear layers (GGUF Q4_1 / Q8_0): the quantizers round as llama.cpp does and are
idempotent on their own output, packing loses nothing, the C++ kernels (AVX-512 VNNI and scalar)
equal the torch reference, and the product stays within the quantization error bound."""

import platform

import pytest
import torch

from loomlm.kernels import quant_linear as ql

QUANTIZE = {"q4_1": ql.quantize_q4_1, "q8_0": ql.quantize_q8_0}
DEQUANTIZE = {"q4_1": ql.dequantize_q4_1, "q8_0": ql.dequantize_q8_0}
needs_extension = pytest.mark.skipif(ql._C is None, reason="loomlm._C is not built (torch absent at install)")


def weight(out_features, in_features, seed=0):
    torch.manual_seed(seed)
    return torch.randn(out_features, in_features) * 0.05


@pytest.mark.parametrize("fmt", ["q4_1", "q8_0"])
def test_dequantized_weights_are_within_half_a_step_and_requantize_to_the_same_blocks(fmt):
    w = weight(24, 96)
    blocks = QUANTIZE[fmt](w)
    assert blocks.shape == (24, 3 * ql.FORMATS[fmt]) and blocks.dtype == torch.uint8
    deq = DEQUANTIZE[fmt](blocks)
    wb = w.reshape(24, 3, 32)
    step = (wb.amax(-1) - wb.amin(-1)) / 15 if fmt == "q4_1" else wb.abs().amax(-1) / 127
    # Half a step, plus the fp16 rounding of the block's scale (and min) times the largest quant.
    slack = step * (15 if fmt == "q4_1" else 127) * 2**-10 + 1e-3 * step
    assert ((deq - w).abs().reshape(24, 3, 32) <= (0.5 * step + slack)[..., None]).all()
    # A GGUF model's own blocks come back bit for bit from their float values.
    assert torch.equal(QUANTIZE[fmt](deq), blocks)


def test_q4_1_matches_llama_cpps_layout_on_a_hand_built_block():
    w = torch.arange(32, dtype=torch.float32)[None] * 0.5 - 4  # min -4, max 11.5: d = 31/30
    block = ql.quantize_q4_1(w)[0]
    d, m = block[:4].view(torch.float16).tolist()
    assert m == -4 and d == pytest.approx(15.5 / 15, rel=1e-3)
    assert block[4] & 0x0F == 0 and block[4] >> 4 == round(8 / d)  # weights 0 and 16 share byte 0
    assert block[19] >> 4 == 15  # weight 31 is the max


@pytest.mark.parametrize("fmt", ["q4_1", "q8_0"])
@pytest.mark.parametrize("in_features", [32, 96, 576])
def test_packing_keeps_every_weight_and_pads_to_whole_block_pairs(fmt, in_features):
    blocks = QUANTIZE[fmt](weight(10, in_features))
    packed = ql.pack_blocks(blocks, fmt, in_features)
    assert packed.padded_in_features % 64 == 0
    assert torch.equal(ql.dequantize_packed(packed), DEQUANTIZE[fmt](blocks))


@needs_extension
@pytest.mark.parametrize("fmt", ["q4_1", "q8_0"])
@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512_vnni"])
@pytest.mark.parametrize(
    ("rows", "in_features", "out_features"),
    [(1, 576, 960), (3, 96, 40), (5, 1536, 37), (9, 64, 130), (4, 32, 7), (13, 128, 67)],
)
def test_the_cpp_kernels_equal_the_torch_reference(fmt, isa, rows, in_features, out_features):
    if isa not in ql._C.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} kernels")
    torch.manual_seed(rows)
    x = torch.randn(rows, in_features) * torch.linspace(0.1, 4, in_features)
    packed = ql.pack_blocks(QUANTIZE[fmt](weight(out_features, in_features)), fmt, in_features)
    reference = ql.packed_linear_ref(x, packed)
    xp = torch.nn.functional.pad(x, (0, packed.padded_in_features - in_features))
    if fmt == "q4_1":
        got = ql._C.q4_1_linear(xp, packed.qs, packed.scales, packed.mins, isa)
    else:
        got = ql._C.q8_0_linear(xp, packed.qs, packed.scales, isa)
    # The integer sums are exact; only the order of the float block sums differs.
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ql.packed_linear(x, packed), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", ["q4_1", "q8_0"])
def test_the_product_is_within_the_activation_rounding_of_the_dequantized_float_product(fmt):
    x = torch.randn(6, 128) * 3
    packed = ql.pack_blocks(QUANTIZE[fmt](weight(20, 128)), fmt, 128)
    w = ql.dequantize_packed(packed)
    got = ql.packed_linear(x, packed)
    # Each activation is off by at most half its block's step (absmax / 127).
    half_step = (x.reshape(6, 4, 32).abs().amax(-1) / 254).repeat_interleave(32, dim=1)
    bound = half_step @ w.abs().t() + 1e-4
    assert ((got - x @ w.t()).abs() <= bound).all()


def test_wrong_shapes_are_refused_with_the_reason():
    packed = ql.pack_blocks(ql.quantize_q4_1(weight(8, 64)), "q4_1", 64)
    with pytest.raises(ValueError, match="features"):
        ql.packed_linear(torch.randn(2, 96), packed)
    with pytest.raises(ValueError, match="divisible by 32"):
        ql.quantize_q4_1(torch.randn(4, 40))
    with pytest.raises(ValueError, match="block format"):
        ql.pack_blocks(ql.quantize_q4_1(weight(8, 64)), "q5_0", 64)
    if ql._C is not None:
        with pytest.raises(RuntimeError, match="scales"):
            ql._C.q4_1_linear(torch.randn(1, 64), packed.qs, packed.scales[:, :1].contiguous(), packed.mins)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="built on x86-64 only")
def test_the_extension_is_built_by_the_readmes_install():
    # `pip install --no-build-isolation -e .` compiles it; a silent fallback would hide a broken build.
    assert ql._C is not None and ql.native_isa() in ql._C.supported_isas()
    assert set(ql._C.supported_isas()) <= {"scalar", "avx2", "avx512_vnni"}


@needs_extension
def test_an_instruction_set_the_cpu_lacks_or_does_not_know_is_refused():
    packed = ql.pack_blocks(ql.quantize_q8_0(weight(8, 64)), "q8_0", 64)
    with pytest.raises(RuntimeError, match="unknown kernel instruction set"):
        ql._C.q8_0_linear(torch.randn(1, 64), packed.qs, packed.scales, "sse9")
    missing = {"avx2", "avx512_vnni"} - set(ql._C.supported_isas())
    for isa in missing:
        with pytest.raises(RuntimeError, match="cannot run"):
            ql._C.q8_0_linear(torch.randn(1, 64), packed.qs, packed.scales, isa)
