"""WorkerSpec: everything a rank needs to build its model runner (plain values: it is pickled into
worker processes), and `build_runner`, the one place a rank's runner is built, in the engine
process or in a worker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from loomlm.adapters.layers import LoRAModelWeights
from loomlm.engine.input_builder import single_sequence_input
from loomlm.engine.model_runner import ModelRunner
from loomlm.engine.models.bf16_weights import convert_to_bf16
from loomlm.engine.models.block_quant import BLOCK_MODES, quantize_blocks
from loomlm.engine.models.gguf_blocks import read_default_blocks
from loomlm.engine.models.linear_kernels import choose_linear_kernels, fuse_gate_up_activations
from loomlm.engine.models.loader import load_model
from loomlm.engine.models.quantized import calibrate, int8_gemm_name, quantize_model
from loomlm.engine.parallel.group import TPGroup
from loomlm.engine.parallel.shard import TPShard
from loomlm.kernels.cpu_ops import native_ops_available

# Base modes whose linear layers quantize their input activations (per row or per block): int8 LoRA
# adapters on them may quantize theirs too, which is what lets the VNNI kernels run them (the base has
# set that precision floor already; bench/lora.py measures the agreement).
ACTIVATION_QUANTIZING_MODES = ("int8", *BLOCK_MODES)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(slots=True, frozen=True)
class WorkerSpec:
    model_dir: str
    dtype: str
    device: str  # "cpu", or "cuda" (rank r then runs on cuda:r)
    num_blocks: int
    block_size: int
    max_num_batched_tokens: int
    tensor_parallel_size: int = 1
    max_loras: int = 0  # 0: LoRA off
    max_lora_rank: int = 0
    lora_dtype: str = "auto"  # LoRAConfig.lora_dtype
    quantization: str | None = None  # see loomlm.engine.models.quantized
    # The cache's dtype, resolved (loomlm.engine.dtype_choice.resolve_kv_cache_dtype); None: dtype.
    kv_cache_dtype: str | None = None
    calibration_ids: tuple[int, ...] = ()  # the text int8 calibrates on, tokenized

    def rank_device(self, rank: int) -> torch.device:
        device = torch.device(self.device)
        if device.type == "cpu" or self.tensor_parallel_size == 1:
            return device
        return torch.device(device.type, rank)


def build_runner(spec: WorkerSpec, tp: TPGroup) -> ModelRunner:
    """Load this rank's shard of the model, size its KV cache and LoRA slots, and wrap them."""
    dtype, device = DTYPES[spec.dtype], spec.rank_device(tp.rank)
    model, arch, _ = load_model(Path(spec.model_dir), dtype, device, tp)
    lora_weights = None
    if spec.max_loras:
        local_spec = TPShard(arch, tp.rank, tp.world_size).local_arch().lora_spec()
        lora_weights = LoRAModelWeights(
            local_spec,
            num_slots=spec.max_loras,
            max_rank=spec.max_lora_rank,
            max_num_tokens=spec.max_num_batched_tokens,
            dtype=dtype,
            device=device,
            int8=spec.lora_dtype == "int8",
            int8_activations=spec.lora_dtype == "int8" and spec.quantization in ACTIVATION_QUANTIZING_MODES,
        )
    runner = ModelRunner(
        model,
        num_blocks=spec.num_blocks,
        block_size=spec.block_size,
        max_num_batched_tokens=spec.max_num_batched_tokens,
        dtype=dtype,
        cache_dtype=DTYPES[spec.kv_cache_dtype or spec.dtype],
        device=device,
        lora_weights=lora_weights,
    )
    if spec.quantization in BLOCK_MODES:
        # The default model's GGUF blocks as they are; a shard, or another model, quantizes its floats.
        source = read_default_blocks(Path(spec.model_dir), arch) if tp.world_size == 1 else None
        report = quantize_blocks(model, spec.quantization, source)
        if runner.enable_fused_decode():
            report += "; decode steps: one fused C++ call for all layers"
    elif spec.quantization == "bf16":
        report = convert_to_bf16(model)
        # Adapters add into gate_up's product before the activation: no fusion with LoRA on.
        if not spec.max_loras and fuse_gate_up_activations(model):
            report += "; gate_up + SiLU·mul: one loomlm bf16 GEMM"
        if runner.enable_fused_decode():
            report += "; decode steps: one fused C++ call for all layers"
    elif spec.quantization is not None:
        # Calibrate on the float model (every rank together: the forward has collectives), then
        # swap its linear layers. The KV blocks written are free: the scheduler owns none yet.
        capacity = min(spec.num_blocks * spec.block_size, spec.max_num_batched_tokens)
        ids = list(spec.calibration_ids[:capacity])
        absmax = (
            calibrate(model, lambda: runner.execute(single_sequence_input(ids, spec.block_size)))
            if ids
            else None
        )
        quantize_model(model, spec.quantization, absmax)
        report = f"int8: {int8_gemm_name()}, per-token activations, SmoothQuant; LM head exact top-64"
        if runner.enable_fused_decode():
            report += "; decode steps: one fused C++ call for all layers"
    else:
        choices = choose_linear_kernels(model, device, dtype)
        kernels = ", ".join(f"{i}x{o} {kernel}" for (i, o), kernel in choices.items()) or "torch.mm"
        report = f"{spec.dtype}: {kernels}"
        # Adapters add into gate_up's product before the activation: no fusion with LoRA on.
        if not spec.max_loras and fuse_gate_up_activations(model):
            report += "; gate_up + SiLU·mul: one loomlm GEMM"
    native = native_ops_available(dtype, device)
    runner.kernel_report = report + ("; norms, rotary, decode attention: loomlm._C" if native else "")
    if spec.kv_cache_dtype not in (None, spec.dtype):
        runner.kernel_report += f"; KV cache {spec.kv_cache_dtype}"
    return runner
