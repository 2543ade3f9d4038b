"""Quality of int8 LoRA adapters for bench/lora.py ``--lora-dtype int8``: perplexity and teacher-forced
top-1 agreement against float32 adapters (which match PEFT: tests/), per adapter, through the engine's
runner on a float32 base and on the benched base."""

from __future__ import annotations

import functools
import statistics
from pathlib import Path

import numpy as np
import torch
from quant import WINDOW, held_ids, quality

from loomlm import LLM
from loomlm.engine.input_builder import single_sequence_input


def slot_logits(runner, slot: int, window: list[int]) -> torch.Tensor:
    """Logits of every position of ``window`` (one sequence, one chunk) with adapter slot ``slot``."""
    model_input = single_sequence_input(window, runner.block_size, all_logits=True)
    model_input.token_slots = np.full(len(window), slot, dtype=np.int32)
    return runner.execute(model_input).double()


def adapter_quality(llm: LLM, names: list[str], ids: list[int]) -> list[tuple[float, list[torch.Tensor]]]:
    """Per adapter: perplexity over held text and each position's argmax, teacher-forced through the
    engine's runner with every token on that adapter's slot (as bench/quant.py does per mode)."""
    engine, runner = llm.engine, llm.engine.executor.runner
    results = []
    for name in names:
        slot = engine.adapters.acquire_slot(engine.adapters.get(name))
        try:
            results.append(quality(functools.partial(slot_logits, runner, slot), ids))
        finally:
            engine.adapters.release_slot(slot)
    return results


def engine_quality(
    args, model_dir: Path, paths: list[Path], quantization: str | None, lora_dtype: str, *, cpp: bool = True
) -> list[tuple[float, list[torch.Tensor]]]:
    """`adapter_quality` of a fresh engine with these settings: every slot in C++ (the path decode steps
    take; by default a window this long would run torch's matmuls), or with ``cpp=False`` in torch."""
    llm = LLM(
        str(model_dir),
        max_num_seqs=args.max_num_seqs,
        kv_cache_bytes=args.kv_cache_bytes,
        enable_prefix_caching=False,
        max_loras=len(paths),
        max_lora_rank=max(args.ranks),
        max_cpu_loras=len(paths),
        quantization=quantization,
        lora_dtype=lora_dtype,
    )
    scratch = llm.engine.executor.runner.lora_weights.cpu_scratch
    scratch.native &= cpp
    scratch.native_max_tokens = WINDOW
    names = [llm.load_adapter(path.name, str(path)).name for path in paths]
    return adapter_quality(llm, names, held_ids(llm.tokenizer, WINDOW))


def compared(label: str, got, expected) -> str:
    agree = [
        torch.cat(g[1]).eq(torch.cat(e[1])).float().mean().item() for g, e in zip(got, expected, strict=True)
    ]
    change = [g[0] / e[0] - 1 for g, e in zip(got, expected, strict=True)]
    return (
        f"| {label} | {statistics.median(agree):.1%} | {min(agree):.1%} | {statistics.median(change):+.2%} "
        f"| {max(change, key=abs):+.2%} |"
    )


def int8_quality(args, model_dir: Path, paths: list[Path]) -> str:
    """Int8 adapters against float32 adapters (which match PEFT: tests/), teacher-forced over held
    text: on a float32 base (the adapters' rounding alone) and on the benched base. A quantized base
    rounds each token's activations, which turns float-order differences into flipped roundings: the
    float32 adapters' torch path against their C++ path (same weights) shows that floor."""
    rows = []
    for base in dict.fromkeys([None, args.quantization]):
        reference = engine_quality(args, model_dir, paths, base, "auto")
        name = base or "float32"
        rows.append(
            compared(
                f"{name} base: int8 adapters", engine_quality(args, model_dir, paths, base, "int8"), reference
            )
        )
        if base is not None:
            torch_path = engine_quality(args, model_dir, paths, base, "auto", cpp=False)
            rows.append(
                compared(f"{name} base: float32 adapters, torch path (the floor)", torch_path, reference)
            )
    return "\n".join(
        [
            f"Against float32 adapters in C++ on the same base ({len(paths)} adapters, {WINDOW} held tokens, "
            "teacher-forced; float32 adapters match PEFT in tests/):",
            "",
            "| compared | top-1 agreement, median | lowest | perplexity change, median | largest |",
            "|---|---:|---:|---:|---:|",
            *rows,
        ]
    )
