"""``dtype="auto"``: the weights' dtype, chosen per machine when the engine loads.

CPUs differ by orders of magnitude here: with AVX-512 BF16 (or AMX) bfloat16 matmuls ran 1.8-3x
faster than float32 in batched decoding on this project's machines, and on a CPU without them ~300x
slower. So "auto" never assumes: on a CPU without a native bf16 instruction it picks float32; with
one, it times a model-shaped matmul in both dtypes (a few milliseconds) and picks bfloat16 only if
that is clearly faster. On a GPU it picks bfloat16 where supported, else float16. Quantized engines
and parity checks use float32.

The KV cache's dtype (`resolve_kv_cache_dtype`) follows the model's, except where the CPU kernels can
read a bfloat16 cache under a float32 model: on request, and under ``quantization="bf16"``."""

from __future__ import annotations

from pathlib import Path

import torch

from loomlm.engine.probe import median_seconds

# A decode batch through an MLP-sized projection; bf16 must beat float32 by this factor to be picked.
_PROBE_SHAPE = (64, 576, 1536)
_MIN_SPEEDUP = 1.2
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_dtype(requested: str, device: str, quantized: bool = False) -> tuple[str, str]:
    """The dtype to load with, and why (for the log and ``LLMEngine.dtype_reason``)."""
    if requested != "auto":
        return requested, "as configured"
    if quantized:
        return "float32", "int8 layers take float32 activations"
    if torch.device(device).type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bfloat16", "GPU with bfloat16"
        return "float16", "GPU without bfloat16"
    if not native_bf16_flags():
        return "float32", "this CPU has no native bfloat16 instructions"
    fp32, bf16 = _time_matmul(torch.float32), _time_matmul(torch.bfloat16)
    if bf16 * _MIN_SPEEDUP < fp32:
        return "bfloat16", f"bfloat16 matmul {fp32 / bf16:.1f}x faster than float32 here"
    return "float32", f"bfloat16 matmul only {fp32 / bf16:.2f}x float32 here"


def resolve_kv_cache_dtype(requested: str, dtype: str, device: str, quantization: str | None) -> str:
    """The KV cache's dtype for a model loaded in ``dtype`` (already resolved). "auto" is the model's
    dtype, but bfloat16 under ``quantization="bf16"``: those layers round their inputs to bfloat16
    already, and a cache of half the bytes streams through decode attention in about half the
    reads. A cache may differ from the model only for a float32 model on the CPU (the C++ kernels
    read both dtypes; CUDA's Triton kernels read the model's)."""
    if requested == "auto":
        requested = "bfloat16" if quantization == "bf16" else dtype
    if requested != dtype and not (dtype == "float32" and torch.device(device).type == "cpu"):
        raise ValueError(
            f"kv_cache_dtype={requested!r} needs a float32 model on the CPU; a {dtype} model on "
            f"{device!r} keeps its cache in {dtype} (kv_cache_dtype='auto')"
        )
    return requested


def native_bf16_flags() -> list[str]:
    """This CPU's bfloat16 dot-product instruction sets (AVX-512 BF16, AMX); empty where it has none."""
    flags = cpu_flags()
    return [flag for flag in BF16_FLAGS if flag in flags]


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def _time_matmul(dtype: torch.dtype) -> float:
    rows, inner, cols = _PROBE_SHAPE
    x, w = torch.randn(rows, inner, dtype=dtype), torch.randn(inner, cols, dtype=dtype)
    return median_seconds(lambda: torch.mm(x, w))
