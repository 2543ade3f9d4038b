"""Data-parallel routing: how many adapter loads into device slots two engine replicas do for one mixed
multi-LoRA workload, routed by adapter affinity versus round robin.

What is measured (counts, not times; the same workload and engines for both policies):

* **Replicas**: ``--replicas`` (2) AsyncLLMs of one model in this process behind the server's
  ``ReplicaSet`` (the router ``loomlm serve --data-parallel-size`` uses), each with ``--max-loras``
  (2) device slots and ``--max-cpu-loras`` (2) adapters kept in memory. Default model: a tiny random
  Llama (2 layers, hidden 64, the SmolLM2 tokenizer) built in a temporary directory, since the
  counts do not depend on the weights; ``--model DIR`` runs a real checkpoint.
* **Adapters**: ``--adapters`` (8) PEFT LoRA adapters (rank 8, all seven linear modules), loaded on
  every replica as the server's admin route does.
* **Workload**: ``--requests-per-adapter`` (6) requests per adapter, in a seeded shuffled
  (interleaved) order, each a distinct prompt of English text, greedy, ``--max-tokens`` (8) tokens
  with ignore_eos; all submitted at once through the router, then awaited.
* **Slot loads**: adapter weights written into a device slot (a miss: the adapter was not in one of
  the replica's slots): each engine's ``loomlm:adapter_slot_loads`` (``stats()["adapter_slot_loads"]``).
  **Re-reads**: the engine's own
  ``loomlm:adapter_loads{reason="reread"}`` (``stats()["adapter_rereads"]``): with max_cpu_loras =
  max_loras most slot misses also re-read the adapter from disk.
* Each policy runs on fresh replicas, ``--rounds`` (3) times, policies alternating; the table shows
  every round. The engine threads may start stepping before the last request is queued, so a round
  can differ from another by a load or two.

Run from the repository root:

    .venv/bin/python bench/dp.py                    # tiny model, a few seconds per round
    .venv/bin/python bench/dp.py --model DIR        # a real checkpoint (adapters made for it)
    .venv/bin/python bench/dp.py --write-results    # also replace its section in bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from bench_common import cpu_model, passages, write_results

from loomlm import AsyncLLM, SamplingParams
from loomlm.engine.model_files import default_model_dir
from loomlm.server.replicas import ReplicaSet

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
POLICIES = ("affinity", "round_robin")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", help="model directory (default: a tiny random Llama with the SmolLM2 tokenizer)"
    )
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--adapters", type=int, default=8)
    p.add_argument("--requests-per-adapter", type=int, default=6)
    p.add_argument("--max-loras", type=int, default=2)
    p.add_argument("--max-cpu-loras", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write-results", action="store_true", help="replace this bench's section in RESULTS.md")
    return p.parse_args()


def make_tiny_model(out_dir: Path) -> Path:
    """A random 2-layer Llama with the default model's tokenizer (the counts need no real weights)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    source = default_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(out_dir)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, out_dir / name)
    return out_dir


def make_adapters(model_dir: Path, out_dir: Path, count: int, seed: int) -> list[Path]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    paths = []
    for i in range(count):
        torch.manual_seed(seed + i)
        model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS))
        paths.append(out_dir / f"lora{i}")
        model.save_pretrained(paths[-1])
        base = model.unload()
    return paths


def make_workload(args: argparse.Namespace, names: list[str]) -> list[tuple[str, str]]:
    """(prompt, adapter) pairs: every adapter ``requests_per_adapter`` times, shuffled; prompts are
    distinct windows of English text, so that no two share a prefix."""
    text = " ".join(passages().split())
    requests = [name for name in names for _ in range(args.requests_per_adapter)]
    random.Random(args.seed).shuffle(requests)
    return [(text[i * 97 : i * 97 + 160], name) for i, name in enumerate(requests)]


async def run_policy(args, policy: str, model_dir: Path, paths: list[Path], workload) -> dict[str, Any]:
    options = dict(max_loras=args.max_loras, max_cpu_loras=args.max_cpu_loras, max_lora_rank=8,
                   enable_prefix_caching=False)  # fmt: skip
    llms = [await asyncio.to_thread(AsyncLLM, str(model_dir), **options) for _ in range(args.replicas)]
    try:
        replicas = ReplicaSet(llms, routing=policy)
        for path in paths:
            await replicas.load_adapter(path.name, str(path))
        params = SamplingParams(temperature=0, max_tokens=args.max_tokens, ignore_eos=True)

        async def one(prompt: str, adapter: str) -> tuple[int, str]:
            stream = await replicas.submit(prompt, params, adapter=adapter)
            output = await stream.result()
            if output.error:
                raise RuntimeError(f"a request failed: {output.error}")
            return stream.replica, adapter

        placed = await asyncio.gather(*(one(prompt, adapter) for prompt, adapter in workload))
        stats = await replicas.stats()
        router = replicas.router
        return {
            "requests": list(router.routed),
            "adapters": [len({a for r, a in placed if r == i}) for i in range(len(llms))],
            "slot_loads": [s["adapter_slot_loads"] for s in stats],
            "rereads": [s["adapter_rereads"] for s in stats],
            "finished": [sum(s["finished"].values()) for s in stats],
            "reasons": {k: sum(router.reasons(i)[k] for i in range(len(llms))) for k in router.reasons(0)},
        }
    finally:
        for llm in llms:
            await llm.shutdown()


def report(args, model_name: str, results: dict[str, list[dict]], command: str) -> str:
    requests = args.adapters * args.requests_per_adapter
    lines = [
        f"- Machine: {cpu_model()}; torch {torch.__version__}; 2026-12-02 "
        f"(run {datetime.datetime.now().isoformat(timespec='seconds')})",
        f"- Command: `{command}`",
        f"- Model: {model_name}; {args.replicas} replicas in one process, each max_loras={args.max_loras}, "
        f"max_cpu_loras={args.max_cpu_loras}, prefix caching off",
        f"- Workload: {args.adapters} adapters x {args.requests_per_adapter} requests = {requests}, shuffled "
        f"(seed {args.seed}), all submitted at once; {args.max_tokens} tokens each, greedy, ignore_eos",
        "",
        "| policy | round | requests per replica | distinct adapters per replica | slot loads per replica "
        "| slot loads total | disk re-reads total | routed by |",
        "|---|---:|---|---|---|---:|---:|---|",
    ]
    for policy, rounds in results.items():
        for i, r in enumerate(rounds, start=1):
            why = ", ".join(f"{k} {v}" for k, v in r["reasons"].items() if v)
            lines.append(
                f"| {policy} | {i} | {' / '.join(map(str, r['requests']))} "
                f"| {' / '.join(map(str, r['adapters']))} | {' / '.join(map(str, r['slot_loads']))} "
                f"| {sum(r['slot_loads'])} | {sum(r['rereads'])} | {why} |"
            )
    medians = {p: statistics.median(sum(r["slot_loads"]) for r in rounds) for p, rounds in results.items()}
    summary = ", ".join(f"{p} {m:g}" for p, m in medians.items())
    lines += ["", f"Median slot loads over {args.rounds} rounds: {summary}."]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace, model_dir: Path, paths: list[Path]) -> dict[str, list[dict]]:
    workload = make_workload(args, [p.name for p in paths])
    results: dict[str, list[dict]] = {p: [] for p in POLICIES}
    for round_index in range(args.rounds):
        order = POLICIES if round_index % 2 == 0 else POLICIES[::-1]
        for policy in order:
            result = await run_policy(args, policy, model_dir, paths, workload)
            if result["finished"] != result["requests"]:
                raise RuntimeError(f"engine counts {result['finished']} != routed {result['requests']}")
            results[policy].append(result)
            print(f"round {round_index + 1} {policy}: slot loads {result['slot_loads']}", flush=True)
    return results


def main() -> None:
    args = parse_args()
    command = "python bench/dp.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="loomlm-dp-bench-") as tmp:
        model_dir = Path(args.model) if args.model else make_tiny_model(Path(tmp) / "tiny")
        model_name = Path(args.model).name if args.model else "tiny random Llama (2 layers, hidden 64)"
        print(f"making {args.adapters} PEFT adapters ...", flush=True)
        paths = make_adapters(model_dir, Path(tmp) / "adapters", args.adapters, args.seed)
        results = asyncio.run(main_async(args, model_dir, paths))
    section = report(args, model_name, results, command.strip())
    print("\n" + section)
    if args.write_results:
        write_results("dp", section, quick=False)
        print("\nwrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
