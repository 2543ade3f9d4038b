"""LoRA's own cost in one engine step on the CPU: the C++ path (float32 rows, and the int8 copy of
``lora_dtype="int8"``) against the torch paths (per adapter, and same-layout slots batched), measured
in the same run, at the default model's shapes.

Where ``bench/lora.py`` measures whole generations (and so the machine's noise over minutes), this
times only the LoRA update of one step: planning it and applying it to the four fused linear
layers of every decoder layer, with fixed random inputs, for step shapes the engine produces:

* decode steps (one token per request; request i uses adapter i % k), 1, 4 and 16 adapters;
* a prefill step of 2048 tokens in chunks of 256, one adapter each;
* a mixed step: 48 decode tokens and prefill chunks, grouped by adapter as the runner does.

Adapters as in ``bench/lora.py`` (all seven modules, ranks cycling 8/16/32/64). The baseline is the
better of the two torch paths per case: ``cpu_batch_max_tokens=0`` (every adapter alone: one matmul
per adapter and module) or the default (decode-sized same-layout slots batched). Variants and cases
are interleaved ``--repeats`` times; medians are reported.

    .venv/bin/python bench/lora_step.py --quick           # smoke test (not a measurement)
    .venv/bin/python bench/lora_step.py --write-results   # a few minutes
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import cpu_model, write_results
from lora import make_adapters
from transformers import AutoConfig

from loomlm.adapters.layers import LoRAModelWeights
from loomlm.adapters.metadata import LoRABatchMetadataBuilder
from loomlm.adapters.peft_loader import load_peft_adapter
from loomlm.adapters.spec import LoRABaseSpec
from loomlm.engine.model_files import default_model_dir
from loomlm.engine.models.arch import LlamaArch

MAX_TOKENS = 2048
VARIANTS = {
    "torch, per adapter": dict(cpu_native=False, cpu_batch_max_tokens=0),
    "torch, batched": dict(cpu_native=False),
    "C++ float32": dict(cpu_native=True),
    "C++ int8": dict(cpu_native=True, int8=True),
}


def spec_of(model_dir: Path) -> LoRABaseSpec:
    return LlamaArch.from_hf_config(AutoConfig.from_pretrained(model_dir)).lora_spec()


def step_cases(num_adapters: int, quick: bool) -> dict[str, list[int]]:
    """Case name -> the slot of every token of the step (grouped by slot where the runner groups)."""
    decode = 16 if quick else 64
    cases = {
        f"decode, {decode} tokens, {k} adapter{'s' * (k > 1)}": sorted(i % k for i in range(decode))
        for k in sorted({1, min(4, num_adapters), num_adapters})
    }
    chunk, total = (32, 128) if quick else (256, MAX_TOKENS)
    prefill = [(i // chunk) % num_adapters for i in range(total)]
    cases[f"prefill, {total} tokens in chunks of {chunk}"] = prefill
    mixed = [i % num_adapters for i in range(decode * 3 // 4)] + prefill[: total - decode * 3 // 4]
    cases[f"mixed, {decode * 3 // 4} decode + prefill tokens"] = sorted(mixed)
    return cases


def time_step(weights: LoRAModelWeights, builder, spec: LoRABaseSpec, token_slots, inputs) -> float:
    start = time.perf_counter()
    step = weights.step(builder.build(np.asarray(token_slots, dtype=np.int32)))
    for layer in range(spec.num_layers):
        for group, (x, out) in inputs.items():
            step.apply(layer, group, x, out)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--adapters", type=int, help="distinct adapters (default 16, 4 with --quick)")
    p.add_argument("--repeats", type=int, help="interleaved repeats (default 7, 2 with --quick)")
    p.add_argument("--adapter-dir", help="keep the generated adapters here (default: a temp dir)")
    p.add_argument("--quick", action="store_true", help="tiny sizes for smoke testing")
    p.add_argument("--write-results", action="store_true", help="replace this run's section in RESULTS.md")
    args = p.parse_args()
    num_adapters = args.adapters or (4 if args.quick else 16)
    repeats = args.repeats or (2 if args.quick else 7)
    ranks = [8, 16] if args.quick else [8, 16, 32, 64]
    model_dir = default_model_dir()
    spec = spec_of(model_dir)
    with tempfile.TemporaryDirectory(prefix="loomlm-lora-step-") as tmp:
        adapter_dir = Path(args.adapter_dir) if args.adapter_dir else Path(tmp)
        paths = make_adapters(model_dir, adapter_dir, num_adapters, ranks, seed=0)
        adapters = [load_peft_adapter(path.name, path, spec, max(ranks)) for path in paths]
    variants = {}
    for name, extra in VARIANTS.items():
        weights = LoRAModelWeights(
            spec, num_slots=num_adapters, max_rank=max(ranks), max_num_tokens=MAX_TOKENS, **extra
        )
        for slot, adapter in enumerate(adapters):
            weights.write_slot(slot, adapter)
        variants[name] = weights
    builder = LoRABatchMetadataBuilder(MAX_TOKENS, num_adapters)
    cases = step_cases(num_adapters, args.quick)
    torch.manual_seed(0)
    inputs_of = {}
    for case, slots in cases.items():
        inputs_of[case] = {}
        for group, modules in spec.groups.items():
            width = sum(spec.module_dims[m][1] for m in modules)
            x = torch.randn(len(slots), spec.module_dims[modules[0]][0])
            inputs_of[case][group] = (x, torch.zeros(len(slots), width))
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeats):
        for case, slots in cases.items():
            for name, weights in variants.items():
                seconds = time_step(weights, builder, spec, slots, inputs_of[case])
                times.setdefault((case, name), []).append(seconds)
    lines = [
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; Python {platform.python_version()}; "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- {num_adapters} adapters on all 7 modules, ranks cycling {ranks}; SmolLM2-135M shapes "
        f"({spec.num_layers} layers); LoRA update only (plan + 4 fused layers x {spec.num_layers}); "
        f"median of {repeats} interleaved repeats",
        "",
        "Milliseconds; the speedups are over the better torch path.",
        "",
        f"| step | {' (ms) | '.join(VARIANTS)} (ms) | C++ float32 speedup | C++ int8 speedup |",
        "|---|" + "---:|" * (len(VARIANTS) + 2),
    ]
    for case in cases:
        ms = {name: statistics.median(times[(case, name)]) * 1e3 for name in VARIANTS}
        torch_best = min(ms["torch, per adapter"], ms["torch, batched"])
        cells = " | ".join(f"{v:,.1f}" for v in ms.values())
        lines.append(
            f"| {case} | {cells} | {torch_best / ms['C++ float32']:.2f} | {torch_best / ms['C++ int8']:.2f} |"
        )
    section = "\n".join(lines)
    print("\n" + section)
    if args.write_results:
        write_results("lora_step", section, args.quick)
        print("\nwrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
