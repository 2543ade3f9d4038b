"""int8 linear layers: each matches the float product of its dequantized weight and its quantized
input to float rounding, stays within the quantization error bound of the float layer, keeps the
product unchanged under smoothing; `quantize_model` swaps every linear layer but the LM head after a
calibration; and LoRA on the int8 base follows PEFT on the float base."""

import pytest
import torch
from layer_support import float_layer

from loomlm.engine.config import CacheConfig, EngineConfig, LoRAConfig, SchedulerConfig
from loomlm.engine.engine import LLMEngine
from loomlm.engine.models.llama import Linear
from loomlm.engine.models.quantized import Int8Linear, RefinedInt8Linear, calibrate, quantize_model
from loomlm.engine.sampling_params import SamplingParams


def quantized_input(x, inv_smooth):
    """What the layer feeds the int8 GEMM, as floats: the smoothed input rounded per row."""
    x = x if inv_smooth is None else x * inv_smooth
    scale = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
    return torch.round(x / scale) * scale, scale


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("rows", [1, 7, 64])
def test_int8_layer_equals_the_dequantized_product_and_stays_within_the_error_bound(bias, smooth, rows):
    layer = float_layer(bias=bias)
    x = torch.randn(rows, 64) * torch.linspace(0.1, 8, 64)  # uneven channel ranges, as in a model
    absmax = x.abs().amax(dim=0) if smooth else None
    q = Int8Linear(layer.weight_t, layer.bias, absmax)
    got = q(x)

    # The weight the GEMM used (smoothed, int8 x scale) against the input it used: float rounding only.
    x_q, x_scale = quantized_input(x, q.inv_smooth)
    weight_used = q.qweight.float() * q.w_scale[:, None]
    exact = x_q @ weight_used.t() + (0 if layer.bias is None else layer.bias)
    torch.testing.assert_close(got, exact, rtol=1e-5, atol=1e-5)

    # Against the float layer: each output is off by at most the input's and the weight's rounding.
    reference = layer(x)
    x_in = x if q.inv_smooth is None else x * q.inv_smooth
    bound = 0.5 * x_scale * weight_used.abs().sum(1) + 0.5 * x_in.abs() @ q.w_scale.expand(64, -1) + 1e-5
    assert ((got - reference).abs() <= bound).all()
    # The dequantized weight (smoothing undone) is within half a step of the float one, per element.
    inv_smooth = torch.ones(64) if q.inv_smooth is None else q.inv_smooth
    step = inv_smooth[:, None] * q.w_scale[None, :]  # [in, out]
    assert ((q.dequantized_weight_t() - layer.weight_t.detach()).abs() <= 0.5 * step + 1e-7).all()


def test_smoothing_moves_outliers_out_of_the_activations():
    layer = float_layer()
    x = torch.randn(16, 64)
    x[:, 3] *= 100  # one outlier channel, as LLM activations have
    plain = Int8Linear(layer.weight_t, None)
    smoothed = Int8Linear(layer.weight_t, None, x.abs().amax(dim=0))
    reference = layer(x)
    err_plain = (plain(x) - reference).abs().mean()
    err_smoothed = (smoothed(x) - reference).abs().mean()
    assert err_smoothed < err_plain / 2


def test_quantize_model_swaps_every_linear_layer_and_refines_the_lm_head(tiny_llama_dir):
    engine = make_engine(tiny_llama_dir, quantization="int8")
    model = engine.executor.runner.model
    assert not any(isinstance(m, Linear) for m in model.modules())
    assert isinstance(model.lm_head, RefinedInt8Linear)
    assert sum(isinstance(m, Int8Linear) for m in model.layers.modules()) == 4 * 2  # 4 per layer, 2 layers
    assert all(m.inv_smooth is not None for m in model.modules() if isinstance(m, Int8Linear))  # calibrated
    with pytest.raises(ValueError, match="quantization"):
        quantize_model(model, "int3")


def test_the_refined_lm_head_is_exact_on_each_rows_top_k_and_int8_elsewhere():
    layer = float_layer(64, 500)
    x = torch.randn(3, 64)
    head = RefinedInt8Linear(layer.weight_t, x.abs().amax(dim=0), top_k=16)
    got, exact, approx = head(x), layer(x), head.int8(x)
    top = approx.topk(16, dim=1).indices
    torch.testing.assert_close(got.gather(1, top), exact.gather(1, top), rtol=1e-5, atol=1e-5)
    rest = torch.ones_like(got, dtype=torch.bool).scatter_(1, top, False)
    assert torch.equal(got[rest], approx[rest])
    assert torch.equal(got.argmax(1), exact.argmax(1))


def test_calibrate_records_every_linear_layers_input_range():
    model = torch.nn.Sequential(float_layer(64, 32), torch.nn.ReLU(), float_layer(32, 8, seed=1))
    batches = [torch.randn(5, 64), torch.randn(5, 64) * 3]
    absmax = calibrate(model, lambda: [model(b) for b in batches])
    assert set(absmax) == {"0", "2"}
    torch.testing.assert_close(absmax["0"], torch.cat(batches).abs().amax(dim=0))


def make_engine(model_dir, **options) -> LLMEngine:
    return LLMEngine(
        EngineConfig(
            model=str(model_dir),
            scheduler=SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=256, max_model_len=256),
            cache=CacheConfig(block_size=8, num_blocks=128),
            lora=LoRAConfig(enable=True, max_loras=2, max_lora_rank=16),
            **options,
        )
    )


@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_lora_on_a_quantized_base_follows_peft_on_the_float_base(
    mode, tiny_llama_dir, tiny_lora_adapters, peft_logits
):
    engine = make_engine(tiny_llama_dir, quantization=mode)
    engine.load_adapter("all8", str(tiny_lora_adapters["all8"]))
    prompt = list(range(1000, 1024))
    engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=0),
                       prompt_token_ids=prompt, adapter="all8")  # fmt: skip
    tokens = []
    while engine.has_unfinished_requests():
        for output in engine.step(only_finished=True):
            tokens = output.outputs[0].token_ids
    reference = peft_logits(tiny_llama_dir, tiny_lora_adapters["all8"], prompt + tokens[:-1])[
        len(prompt) - 1 :
    ]
    agreement = (reference.argmax(-1) == torch.tensor(tokens)).float().mean()
    assert agreement >= 0.75, f"{mode} + LoRA chose PEFT's argmax at {agreement:.0%} of positions"


def test_quantization_needs_the_cpu_and_float32():
    with pytest.raises(ValueError, match="float32"):
        EngineConfig(quantization="int8", dtype="bfloat16")
    with pytest.raises(ValueError, match="quantization must be"):
        EngineConfig(quantization="int3")


def test_calibration_fits_a_model_whose_context_is_shorter_than_the_calibration_text(tiny_llama_dir):
    # The tiny model has 512 positions; the calibration text is longer and the step budget is 2048.
    engine = LLMEngine(EngineConfig(model=str(tiny_llama_dir), quantization="int8"))
    engine.add_request("Hello", SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    outputs = []
    while engine.has_unfinished_requests():
        outputs += engine.step(only_finished=True)
    assert len(outputs[0].outputs[0].token_ids) == 4


@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_the_cpp_int8_layer_gives_the_torch_layers_results_exactly(monkeypatch, smooth, bias):
    from loomlm.engine.models import quantized

    if quantized._C is None:
        pytest.skip("loomlm._C is not built")
    layer = float_layer(bias=bias)
    x = torch.randn(5, 64) * torch.linspace(0.1, 8, 64)
    q = Int8Linear(layer.weight_t, layer.bias, x.abs().amax(dim=0) if smooth else None)
    native = q(x)
    monkeypatch.setattr(quantized, "native_ops_apply", lambda _: False)
    assert torch.equal(native, q(x))  # the same float operations in the same order


@pytest.mark.parametrize(
    "kernel", ["onednn", "scalar", "avx2", "avx2_tiles", "avx2_gemm", "avx512_vnni", "avx512_vnni_tiles"]
)
@pytest.mark.parametrize(
    ("rows", "in_features", "out_features"),
    # decode and prefill row counts (the AVX2 path switches kernels at 16 or 32 rows, the VNNI one at
    # 96), ragged tiles, panels and K chunks (512 inputs a chunk; VNNI: 64-byte steps and a masked tail)
    [
        (1, 576, 960),
        (6, 1536, 37),
        (9, 40, 5),
        (17, 576, 40),
        (33, 33, 17),
        (37, 1100, 48),
        (71, 576, 40),
        (97, 576, 21),
        (200, 1536, 33),
    ],
)
@pytest.mark.parametrize("with_bias", [False, True])
def test_every_int8_gemm_gives_the_same_exact_integer_sums(
    kernel, rows, in_features, out_features, with_bias
):
    from loomlm.engine.models import quantized

    if quantized._C is None:
        pytest.skip("loomlm._C is not built")
    for isa in ("avx2", "avx512_vnni"):
        if kernel.startswith(isa) and isa not in quantized._C.supported_isas():
            pytest.skip(f"this CPU has no {isa}")
    torch.manual_seed(rows)
    x = torch.randn(rows, in_features)
    qweight = torch.randint(-127, 128, (out_features, in_features), dtype=torch.int8)
    qweight[0] = 127  # the largest products: no int16 pair may saturate
    x[0] = torch.where(torch.arange(in_features) % 2 == 0, 4.0, -4.0)
    qweight[-1] = -127
    w_scale = torch.rand(out_features) + 0.1
    bias = torch.randn(out_features) if with_bias else None
    got = quantized._C.int8_linear(x, qweight, w_scale, torch.empty(0), bias, kernel)
    scale = x.abs().amax(dim=1, keepdim=True) / 127
    x_int8 = torch.round(x / scale).to(torch.int8)
    want = (x_int8.long() @ qweight.long().t()).float() * scale * w_scale
    if bias is not None:
        want = want + bias
    assert torch.equal(got, want)
    assert quantized._C.int8_kernel() in ("onednn", "avx2", "avx512_vnni")
    with pytest.raises(RuntimeError, match="unknown int8 kernel"):
        quantized._C.int8_linear(x, qweight, w_scale, torch.empty(0), None, "avx512_bf16")
