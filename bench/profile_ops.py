"""Helpers of ``bench/profile_step.py``: timers wrapped around the engine's ops from outside (no engine
code is edited; ``instrument`` patches instance and module attributes and undoes them), the
machine's roofs, and the bytes and FLOPs each op must move or compute in a given step."""

from __future__ import annotations

import functools
import importlib
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from loomlm.engine.models.parallel_layers import VocabParallelEmbedding
from loomlm.engine.probe import median_seconds

# Row labels of the step tables, in order. "Python overhead" rows come last.
LINEARS = ("linear: qkv_proj", "linear: o_proj", "linear: gate_up_proj", "linear: down_proj")
ATTENTION = (
    "attn: decode",
    "attn: prefill",
    "attn: KV gather (torch decode path)",
    "attn: SDPA",
    "attn: other",
)
MODEL_OPS = (*LINEARS, *ATTENTION, "rotary + KV store", "RMSNorm", "SiLU·mul", "glue", "LM head", "sampler")
OVERHEAD = ("schedule", "input prep", "output processing", "step other")
DESCRIPTIONS = {
    "attn: other": "attn: other (prefill K/V gather, GQA repeat, masks, decode plan, scatter)",
    "attn: decode": "attn: decode (loomlm._C, straight from the paged cache; no gather)",
    "attn: prefill": "attn: prefill chunks and the step's decode rows (loomlm._C, one call a layer)",
    "glue": "glue (residual adds, embedding, views, logits rows, module Python)",
    "output processing": "output processing (update, detokenize, stop check, outputs, metrics)",
    "step other": "step other (engine.step body, grammar hooks)",
    "linear total": "**linear layers, total**",
    "Python overhead": "**Python overhead**",
    "step": "**step, instrumented**",
    "plain step": "step, plain (no timers)",
}


class Timers:
    """Exclusive wall time per label: a wrapped call's time minus that of wrapped calls inside it
    (CPU ops are synchronous, so wall time is the op's time)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = defaultdict(float)
        self._stack: list[list[float]] = []
        self.chunks: list[tuple[int, int]] = []  # (tokens, context after the step) of the last schedule

    def wrap(self, label: str, fn: Callable) -> Callable:
        stack, times, now = self._stack, self.times, time.perf_counter

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            frame = [0.0]
            stack.append(frame)
            start = now()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = now() - start
                stack.pop()
                times[label] += elapsed - frame[0]
                if stack:
                    stack[-1][0] += elapsed

        return timed

    def take(self) -> dict[str, float]:
        out = dict(self.times)
        self.times.clear()
        return out


class _Proxy:
    """Stands in for a module inside one other module: the given names are replaced, the rest forwarded."""

    def __init__(self, module, **overrides) -> None:
        self._module = module
        self.__dict__.update(overrides)

    def __getattr__(self, name: str):
        return getattr(self._module, name)


def instrument(engine, timers: Timers) -> Callable[[], None]:
    """Wrap every op of ``engine``'s step with ``timers``; returns the function that undoes it."""
    from loomlm.engine.models import attention, llama
    from loomlm.kernels import paged_attention_cpu as attn_cpu

    undo: list[Callable[[], None]] = []

    def patch(owner, name: str, label: str | None, new: object = None) -> None:
        had = name in vars(owner)
        old = vars(owner).get(name)
        setattr(owner, name, new if new is not None else timers.wrap(label, getattr(owner, name)))
        undo.append(lambda: setattr(owner, name, old) if had else delattr(owner, name))

    model = engine.executor.runner.model
    for name, module in model.named_modules():
        if isinstance(module, llama.Linear):
            label = "LM head" if name == "lm_head" else "linear: " + name.rsplit(".", 1)[-1]
        elif isinstance(module, llama.GateUpSiluMul):
            label = "linear: gate_up_proj"  # with SiLU·mul fused in (its own row then reads ~0)
        elif isinstance(module, llama.RMSNorm):
            label = "RMSNorm"
        elif isinstance(module, llama.RotaryEmbedding):
            label = "rotary + KV store"
        elif isinstance(module, llama.LlamaMLP):
            label = "SiLU·mul"  # its own time: split, silu, mul (the linears are timed apart)
        elif (
            isinstance(module, (llama.LlamaDecoderLayer, llama.LlamaAttention, VocabParallelEmbedding))
            or module is model
        ):
            label = "glue"
        else:
            continue
        patch(module, "forward", label)
    patch(llama, "rotary_store_kv", "rotary + KV store")
    patch(attention, "paged_attention", "attn: other")  # its own time, less the decode and SDPA
    # The module, not the function of the same name that loomlm.kernels exports.
    attn_dispatch = importlib.import_module("loomlm.kernels.paged_attention")
    patch(attn_dispatch, "decode_attention", "attn: decode")
    patch(attn_dispatch, "prefill_attention", "attn: prefill")
    gather = timers.wrap("attn: KV gather (torch decode path)", torch.index_select)
    patch(attn_cpu, "torch", None, _Proxy(torch, index_select=gather))
    sdpa = timers.wrap("attn: SDPA", F.scaled_dot_product_attention)
    patch(attn_cpu, "F", None, _Proxy(F, scaled_dot_product_attention=sdpa))
    patch(engine.executor.runner, "execute", "glue")
    patch(engine.input_builder, "build", "input prep")
    patch(engine, "sampler", "sampler")
    for owner, name in ((engine.scheduler, "update"), (engine.output_processor, "process")):
        patch(owner, name, "output processing")
    patch(engine.metrics, "record_step", "output processing")
    timed_schedule = timers.wrap("schedule", engine.scheduler.schedule)

    def schedule():
        out = timed_schedule()
        timers.chunks = [(c.num_tokens, c.end_position) for c in out.chunks]
        return out

    patch(engine.scheduler, "schedule", None, schedule)
    patch(engine, "step", "step other")

    def restore() -> None:
        for fn in reversed(undo):
            fn()

    return restore


@dataclass(slots=True)
class Roofs:
    copy_gbs: float  # bytes read + written per second by a large tensor copy
    gemv_mm_gbs: float  # weight bytes/s of torch.mm(x[1, k], W[k, n]) (the engine's path), W >> caches
    gemv_dnn_gbs: float | None  # the same through oneDNN with the weight prepacked (None: unavailable)
    gemm_mm_gflops: float  # fp32 FLOP/s of a large square torch.mm
    gemm_dnn_gflops: float | None
    op_floor_us: float  # one tiny torch op (add of 576 floats), dispatch-bound

    @property
    def gemv_gbs(self) -> float:
        return max(self.gemv_mm_gbs, self.gemv_dnn_gbs or 0.0)

    @property
    def gemm_gflops(self) -> float:
        return max(self.gemm_mm_gflops, self.gemm_dnn_gflops or 0.0)


def _copy_gbs(nbytes: int, repeats: int) -> float:
    src = torch.rand(nbytes // 4)
    dst = torch.empty_like(src)
    return 2 * nbytes / median_seconds(lambda: dst.copy_(src), repeats) / 1e9


def _matmul_s(rows: int, k: int, n: int, repeats: int) -> tuple[float, float | None]:
    """Seconds of x[rows, k] @ W[k, n]: torch.mm in the engine's layout (W [in, out] contiguous), and
    oneDNN with W prepacked (``torch.ops.mkldnn``, what torch.compile's CPU freezing uses; None
    where this torch build lacks it)."""
    weight, x = torch.rand(k, n), torch.rand(rows, k)
    t_mm = median_seconds(lambda: torch.mm(x, weight), repeats)
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.t().contiguous(), None)
    except (AttributeError, RuntimeError):
        return t_mm, None
    weight = None  # free it before timing the packed copy
    return t_mm, median_seconds(
        lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], ""), repeats
    )


@torch.inference_mode()
def measure_roofs(quick: bool) -> Roofs:
    repeats, nbytes = (3, 32 << 20) if quick else (7, 256 << 20)
    copy = _copy_gbs(nbytes, repeats)
    gemv_mm, gemv_dnn = _matmul_s(1, 4096, nbytes // 4 // 4096, repeats)
    n = 1024 if quick else 2048
    gemm_mm, gemm_dnn = _matmul_s(n, n, n, repeats)
    small = torch.rand(576)
    floor = median_seconds(lambda: [torch.add(small, small) for _ in range(1000)], repeats) / 1000
    return Roofs(
        copy,
        nbytes / gemv_mm / 1e9,
        nbytes / gemv_dnn / 1e9 if gemv_dnn else None,
        2 * n**3 / gemm_mm / 1e9,
        2 * n**3 / gemm_dnn / 1e9 if gemm_dnn else None,
        floor * 1e6,
    )


def op_costs(arch, chunks: list[tuple[int, int]], block_size: int) -> dict[str, tuple[float, float, str]]:
    """Label -> (bytes, FLOPs, which bandwidth roof: "gemv" or "copy") that one step must move or
    compute at least (fp32; every sequence of the step samples). ``chunks``: (new tokens, context
    after the step) per sequence."""
    layers, heads, kv_heads, dim = arch.num_layers, arch.num_heads, arch.num_kv_heads, arch.head_dim
    hidden, inter, vocab, f = arch.hidden_size, arch.intermediate_size, arch.vocab_size, 4
    tokens, rows = sum(q for q, _ in chunks), len(chunks)

    def linear(n_in: int, n_out: int, n_rows: int, n_layers: int) -> tuple[float, float, str]:
        return (
            f * (n_in * n_out + n_rows * (n_in + n_out)) * n_layers,
            2 * n_rows * n_in * n_out * n_layers,
            "gemv",
        )

    kv_row = f * kv_heads * dim  # bytes of one token's K (or V) in one layer
    gathered = sum(-(-s // block_size) * block_size for q, s in chunks if q == 1)
    decode_flops = sum(4 * heads * dim * s for q, s in chunks if q == 1)
    sdpa_bytes, sdpa_flops = 0, 0
    for q, s in ((q, s) for q, s in chunks if q > 1):  # prefill: q, GQA-expanded k/v, out
        sdpa_bytes += f * heads * dim * (2 * q + 2 * s)
        sdpa_flops += 4 * heads * dim * (q * (s - q) + q * (q + 1) / 2)  # causal pairs only
    costs = {
        "linear: qkv_proj": linear(hidden, (heads + 2 * kv_heads) * dim, tokens, layers),
        "linear: o_proj": linear(heads * dim, hidden, tokens, layers),
        "linear: gate_up_proj": linear(hidden, 2 * inter, tokens, layers),
        "linear: down_proj": linear(inter, hidden, tokens, layers),
        "LM head": linear(hidden, vocab, rows, 1),
        "attn: decode": (2 * gathered * kv_row * layers, decode_flops * layers, "gemv"),  # K, V read once
        "attn: KV gather (torch decode path)": (2 * 2 * gathered * kv_row * layers, 0, "copy"),
        "attn: SDPA": (sdpa_bytes * layers, sdpa_flops * layers, "gemv"),
        "attn: prefill": (
            (sdpa_bytes + 2 * gathered * kv_row) * layers,
            (sdpa_flops + decode_flops) * layers,
            "gemv",
        ),
        # rotate q and k in place (read + write), then copy K and V into the cache (read + write)
        "rotary + KV store": (f * tokens * (2 * (heads + 3 * kv_heads) * dim + 2 * dim) * layers, 0, "copy"),
        "RMSNorm": (f * 2 * hidden * (2 * tokens * layers + rows), 0, "copy"),
        "SiLU·mul": (f * tokens * 3 * inter * layers, 0, "copy"),
        "sampler": (f * rows * vocab, 0, "copy"),
    }
    costs["linear total"] = tuple(sum(costs[k][i] for k in LINEARS) for i in (0, 1)) + ("gemv",)
    return costs


def roof_fraction(cost: tuple[float, float, str] | None, seconds: float, roofs: Roofs) -> str:
    """Achieved rate as a fraction of the roofline bound: bandwidth x intensity, capped by GEMM."""
    if cost is None or cost[0] == 0 or seconds <= 0:
        return ""
    nbytes, flops, kind = cost
    bandwidth = roofs.gemv_gbs if kind == "gemv" else roofs.copy_gbs
    if flops == 0:
        return f"{nbytes / seconds / 1e9 / bandwidth:.0%} bw"
    bound_by_bw = bandwidth * flops / nbytes < roofs.gemm_gflops
    attainable = min(roofs.gemm_gflops, bandwidth * flops / nbytes)
    return f"{flops / seconds / 1e9 / attainable:.0%} {'bw' if bound_by_bw else 'mm'}"
