"""loomlm against an earlier loomlm: ``bench/throughput.py``'s loomlm measurements at two git
revisions, in one run, interleaved, as a ratio.

The base revision is checked out in a git worktree under ``.scratch/``; each side runs in its own
subprocess whose ``import loomlm`` resolves to that side's source (a symlink tree maps the
package folders the way ``pyproject.toml`` does), on the same machine state, threads and weights.
Rounds alternate which side goes first; the table shows the median of each side over the rounds
and the ratio new / base. Workload options after ``--`` go to ``bench/throughput.py`` (only its
loomlm side runs). Where the two revisions differ in ``csrc/``, ``--build-base`` first builds the
base's own ``loomlm._C`` in its worktree (``setup.py build_ext --inplace``, several minutes);
without it the base side has no extension of its own to load.

    .venv/bin/python bench/compare_revisions.py --base 41a793c --rounds 3 -- --num-requests 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".scratch" / "revisions"
# Import root layout of pyproject.toml's package-dir: loomlm is sdk/, its subpackages sit beside it.
SUBPACKAGES = ("engine", "grammar", "adapters", "kernels", "common")


def package_tree(source: Path, name: str) -> Path:
    """A folder holding ``loomlm/`` laid out from ``source`` as pyproject.toml maps it."""
    tree = SCRATCH / f"{name}-pkg"
    package = tree / "loomlm"
    package.mkdir(parents=True, exist_ok=True)
    for entry in (source / "sdk").iterdir():
        link = package / entry.name
        if not link.exists():
            link.symlink_to(entry)
    for sub in SUBPACKAGES:
        link = package / sub
        if (source / sub).is_dir() and not link.exists():
            link.symlink_to(source / sub)
    return tree


def checkout(revision: str) -> tuple[Path, str]:
    sha = subprocess.check_output(["git", "rev-parse", "--short", revision], cwd=ROOT, text=True).strip()
    worktree = SCRATCH / sha
    if not worktree.exists():
        SCRATCH.mkdir(parents=True, exist_ok=True)
        subprocess.check_call(["git", "worktree", "add", "--detach", str(worktree), sha], cwd=ROOT)
    return worktree, sha


def build_extension(worktree: Path) -> None:
    if not list((worktree / "sdk").glob("_C*.so")):
        print(f"building loomlm._C in {worktree} ...", flush=True)
        build = [sys.executable, "setup.py", "build_ext", "--inplace"]
        subprocess.run(build, cwd=worktree, check=True, capture_output=True)


def run_side(tree: Path, workload_args: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{ROOT / 'bench'}"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--", *workload_args]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def worker(workload_args: list[str]) -> None:
    import throughput
    from bench_common import passage_ids

    import loomlm

    sys.argv = ["throughput.py", "--skip-hf", *workload_args]
    args = throughput.parse_args()
    llm = loomlm.LLM(
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        kv_cache_bytes=args.kv_cache_bytes,
        enable_prefix_caching=args.prefix_caching,
    )
    ids = passage_ids(llm.tokenizer, max(args.max_prompt, args.prefill_len, args.decode_prompt))
    result, _ = throughput.run_loomlm(args, ids, llm)
    result["source"] = str(Path(loomlm.__file__).resolve().parent.parent)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="HEAD", help="git revision to compare against (default HEAD)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median over them)")
    parser.add_argument("--build-base", action="store_true", help="build the base revision's loomlm._C first")
    parser.add_argument("--write-results", action="store_true", help="replace this section in RESULTS.md")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    workload_args = [a for a in rest if a != "--"]
    if args.worker:
        worker(workload_args)
        return
    base_source, sha = checkout(args.base)
    if args.build_base:
        build_extension(base_source)
    sides = {f"base {sha}": package_tree(base_source, sha), "working tree": package_tree(ROOT, "working")}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for round_index in range(args.rounds):
        order = list(sides) if round_index % 2 == 0 else list(reversed(sides))
        for name in order:
            print(f"round {round_index + 1}/{args.rounds}: {name} ...", flush=True)
            results[name].append(run_side(sides[name], workload_args))
    section = report(results, list(sides), args.rounds, workload_args)
    print("\n" + section)
    if args.write_results:
        sys.path.insert(0, str(ROOT / "bench"))
        from bench_common import write_results

        write_results("compare_revisions", section, quick=False)
        print("\nwrote bench/RESULTS.md")


def report(
    results: dict[str, list[dict[str, float]]], names: list[str], rounds: int, workload: list[str]
) -> str:
    import datetime
    import platform

    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_common import cpu_model

    base_name, new_name = names
    metrics = [k for k in results[new_name][0] if k != "source"]
    lines = [
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; Python {platform.python_version()}; "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- Workload: bench/throughput.py {' '.join(workload) or '(defaults)'}, loomlm only; median of "
        f"{rounds} interleaved rounds (each side in its own process, alternating first)",
        "",
        f"| metric | {base_name} | {new_name} | ratio new / base |",
        "|---|---:|---:|---:|",
    ]
    for metric in metrics:
        base = statistics.median(r[metric] for r in results[base_name])
        new = statistics.median(r[metric] for r in results[new_name])
        lines.append(f"| {metric} | {base:.2f} | {new:.2f} | {new / base:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
