"""dtype="auto": an explicit dtype is kept; quantized engines get float32; a CPU without native
bfloat16 gets float32 without timing anything; with it, bfloat16 only when measured faster."""

import pytest

from loomlm.engine import dtype_choice
from loomlm.engine.config import EngineConfig
from loomlm.engine.dtype_choice import resolve_dtype


def test_an_explicit_dtype_is_kept_and_quantized_engines_run_float32():
    assert resolve_dtype("bfloat16", "cpu") == ("bfloat16", "as configured")
    assert resolve_dtype("auto", "cpu", quantized=True)[0] == "float32"


def test_a_cpu_without_native_bfloat16_gets_float32_without_a_measurement(monkeypatch):
    monkeypatch.setattr(dtype_choice, "cpu_flags", lambda: {"avx2", "fma"})
    monkeypatch.setattr(dtype_choice, "_time_matmul", lambda dtype: pytest.fail("must not time"))
    dtype, reason = resolve_dtype("auto", "cpu")
    assert dtype == "float32" and "no native bfloat16" in reason


@pytest.mark.parametrize(("fp32_s", "bf16_s", "expected"), [(3.0, 1.0, "bfloat16"), (1.0, 0.95, "float32")])
def test_with_native_bfloat16_the_faster_dtype_is_picked(monkeypatch, fp32_s, bf16_s, expected):
    monkeypatch.setattr(dtype_choice, "cpu_flags", lambda: {"avx512_bf16"})
    times = {"torch.float32": fp32_s, "torch.bfloat16": bf16_s}
    monkeypatch.setattr(dtype_choice, "_time_matmul", lambda dtype: times[str(dtype)])
    assert resolve_dtype("auto", "cpu")[0] == expected


def test_the_real_probe_returns_a_dtype_the_engine_loads():
    assert resolve_dtype("auto", "cpu")[0] in ("float32", "bfloat16")


def test_auto_is_a_valid_config_value_and_nonsense_is_not():
    assert EngineConfig(dtype="auto").dtype == "auto"
    with pytest.raises(ValueError, match="auto"):
        EngineConfig(dtype="float8")
