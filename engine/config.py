"""Typed engine configuration. Bad values raise ValueError saying what to change."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from loomlm.common.paths import grammar_cache_dir
from loomlm.grammar.compiler import CompilerConfig

SchedulingPolicy = Literal["fcfs", "priority"]

QUANTIZATION_MODES = (None, "int8", "int4", "q8_0", "bf16")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(slots=True)
class SchedulerConfig:
    max_num_seqs: int = 128
    # Token budget of one step: the sum of prefill chunks and decodes.
    max_num_batched_tokens: int = 2048
    # None: the model's own context length (resolved by the engine).
    max_model_len: int | None = None
    enable_chunked_prefill: bool = True
    policy: SchedulingPolicy = "fcfs"

    def __post_init__(self) -> None:
        _require(self.max_num_seqs >= 1, f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        _require(
            self.max_num_batched_tokens >= 1,
            f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}",
        )
        _require(
            self.max_model_len is None or self.max_model_len >= 2,
            f"max_model_len must be >= 2, got {self.max_model_len}",
        )
        _require(
            self.policy in ("fcfs", "priority"),
            f"policy must be 'fcfs' or 'priority', got {self.policy!r}",
        )

    def resolved(self, model_max_len: int) -> SchedulerConfig:
        """This config with max_model_len capped at the model's context; without chunked prefill
        the step budget grows to max_model_len so that any prompt fits one step."""
        max_model_len = min(self.max_model_len or model_max_len, model_max_len)
        budget = self.max_num_batched_tokens
        if not self.enable_chunked_prefill:
            budget = max(budget, max_model_len)
        return replace(self, max_model_len=max_model_len, max_num_batched_tokens=budget)


KV_CACHE_DTYPES = ("auto", "float32", "bfloat16")


@dataclass(slots=True)
class CacheConfig:
    block_size: int = 16
    # Exactly one of these sizes the KV pool; when both are None the engine uses a byte budget default.
    num_blocks: int | None = None
    kv_cache_bytes: int | None = None
    enable_prefix_caching: bool = True
    # "auto": the model's dtype (bfloat16 under quantization="bf16"); "bfloat16" halves a float32
    # model's cache on the CPU (keys and values rounded to bfloat16 as they are written).
    kv_cache_dtype: str = "auto"

    def __post_init__(self) -> None:
        _require(
            self.block_size >= 1 and (self.block_size & (self.block_size - 1)) == 0,
            f"block_size must be a power of two, got {self.block_size}",
        )
        _require(
            self.num_blocks is None or self.kv_cache_bytes is None,
            "give either num_blocks or kv_cache_bytes, not both",
        )
        _require(self.num_blocks is None or self.num_blocks >= 1, "num_blocks must be >= 1")
        _require(self.kv_cache_bytes is None or self.kv_cache_bytes > 0, "kv_cache_bytes must be positive")
        _require(
            self.kv_cache_dtype in KV_CACHE_DTYPES,
            f"kv_cache_dtype must be one of {KV_CACHE_DTYPES}, got {self.kv_cache_dtype!r}",
        )


LORA_DTYPES = ("auto", "int8")


@dataclass(slots=True)
class LoRAConfig:
    """Multi-LoRA serving. ``max_loras`` adapters can run in one step (device slots), each of rank
    at most ``max_lora_rank``; ``max_cpu_loras`` loaded adapters stay in memory (others are re-read).
    ``lora_dtype``: "auto" keeps adapter weights in the model's dtype; "int8" (CPU, float32) rounds
    them to int8 per rank component when they are written to a slot, and the C++ kernels read a packed
    int8 copy (a quarter of the bytes). On a base that quantizes its own activations (int8, int4,
    q8_0) the AVX-512 VNNI kernels quantize the adapters' activations to int8 per token too; the float32
    base keeps them float32. bench/lora.py states the agreement with float32 adapters."""

    enable: bool = False
    max_loras: int = 4
    max_lora_rank: int = 64
    max_cpu_loras: int | None = None  # None: max(max_loras, 16)
    lora_dtype: str = "auto"

    def __post_init__(self) -> None:
        _require(
            self.lora_dtype in LORA_DTYPES,
            f"lora_dtype must be one of {LORA_DTYPES}, got {self.lora_dtype!r}",
        )
        _require(self.max_loras >= 1, f"max_loras must be >= 1, got {self.max_loras}")
        _require(self.max_lora_rank >= 1, f"max_lora_rank must be >= 1, got {self.max_lora_rank}")
        if self.max_cpu_loras is None:
            self.max_cpu_loras = max(self.max_loras, 16)
        _require(
            self.max_cpu_loras >= self.max_loras,
            f"max_cpu_loras ({self.max_cpu_loras}) must be >= max_loras ({self.max_loras})",
        )


ExecutorBackend = Literal["uni", "mp"]


@dataclass(slots=True)
class ParallelConfig:
    """Where the model runs. ``tensor_parallel_size`` ranks each hold a shard of every layer; the
    ``mp`` backend runs one worker process per rank (torch.distributed: gloo on CPU, NCCL on GPU),
    ``uni`` runs one rank in the engine process. None picks ``uni`` for one rank, ``mp`` for more."""

    tensor_parallel_size: int = 1
    distributed_executor_backend: ExecutorBackend | None = None
    worker_threads: int | None = None  # torch threads per worker; None: the cores split among ranks
    startup_timeout_s: float = 600.0  # workers load their shards within this
    step_timeout_s: float = 600.0  # a step with no reply from every worker in this fails the engine

    def __post_init__(self) -> None:
        _require(
            self.tensor_parallel_size >= 1,
            f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}",
        )
        _require(
            self.distributed_executor_backend in (None, "uni", "mp"),
            "distributed_executor_backend must be 'uni', 'mp' or None, got "
            f"{self.distributed_executor_backend!r}",
        )
        _require(
            self.tensor_parallel_size == 1 or self.distributed_executor_backend != "uni",
            "the 'uni' executor runs one rank; use 'mp' (or leave it None) for tensor_parallel_size > 1",
        )
        _require(self.worker_threads is None or self.worker_threads >= 1, "worker_threads must be >= 1")
        _require(
            self.startup_timeout_s > 0 and self.step_timeout_s > 0,
            "startup_timeout_s and step_timeout_s must be positive",
        )

    @property
    def backend(self) -> ExecutorBackend:
        if self.distributed_executor_backend is not None:
            return self.distributed_executor_backend
        return "uni" if self.tensor_parallel_size == 1 else "mp"


@dataclass(slots=True)
class EngineConfig:
    model: str | None = None  # local HF directory; None selects the default SmolLM2-135M-Instruct
    device: str = "cpu"
    dtype: str = "float32"
    # Linear layers' weights (CPU, float32 activations): None (the dtype's); "int8" (per-channel
    # int8 weights, per-token int8 activations: loomlm.engine.models.quantized); "int4" (Q4_1
    # blocks, Q8_0 LM head) or "q8_0" (Q8_0 blocks): loomlm.engine.models.block_quant; "bf16"
    # (bfloat16 weights, bf16 GEMMs: loomlm.engine.models.bf16_weights; for AVX-512 BF16 or AMX CPUs).
    quantization: str | None = None
    seed: int | None = None
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    # Grammar compilation (workers, caches, time and size limits) for structured output.
    grammar: CompilerConfig = field(default_factory=lambda: CompilerConfig(cache_dir=grammar_cache_dir()))
    # Which grammar backend enforces response formats: "auto" (llguidance, falling back to
    # outlines-core where llguidance refuses a spec), "llguidance" or "outlines".
    grammar_backend: str = "auto"
    # Append the tokens a grammar forces (keys, punctuation) without a model step per token.
    jump_forward: bool = True

    def __post_init__(self) -> None:
        _require(
            self.grammar_backend in ("auto", "llguidance", "outlines"),
            f"grammar_backend must be 'auto', 'llguidance' or 'outlines', got {self.grammar_backend!r}",
        )
        _require(
            self.dtype in ("float32", "bfloat16", "float16", "auto"),
            "dtype must be float32, bfloat16, float16 or auto (chosen per machine at load), "
            f"got {self.dtype!r}",
        )
        _require(
            self.quantization in QUANTIZATION_MODES,
            f"quantization must be one of {QUANTIZATION_MODES}, got {self.quantization!r}",
        )
        _require(
            self.quantization is None or (self.device == "cpu" and self.dtype in ("float32", "auto")),
            f"quantization={self.quantization!r} runs on the CPU with dtype float32 (its kernels take "
            f"float32 activations); got device {self.device!r}, dtype {self.dtype!r}",
        )
        _require(
            self.lora.lora_dtype == "auto" or (self.device == "cpu" and self.dtype in ("float32", "auto")),
            f"lora_dtype={self.lora.lora_dtype!r} runs on the CPU with dtype float32; got device "
            f"{self.device!r}, dtype {self.dtype!r}",
        )
