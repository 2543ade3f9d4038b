"""Pieces every benchmark shares: prompt text, the machine description and RESULTS.md sections.

The benchmarks run as scripts (``python bench/<name>.py``), so this directory is on ``sys.path``."""

from __future__ import annotations

import importlib
import platform
import re
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
# Mostly-prose module docstrings: real English text for prompts, the same on every machine that runs
# the same Python version.
PASSAGE_MODULES = (
    "subprocess heapq random collections unittest pydoc inspect typing sched difflib tempfile shelve"
)


def passages() -> str:
    return "\n\n".join(importlib.import_module(m).__doc__ or "" for m in PASSAGE_MODULES.split())


def passage_ids(tokenizer, min_len: int) -> list[int]:
    """The passages as token ids, tiled only if a window of ``min_len`` could be longer than the text."""
    ids = tokenizer(passages(), add_special_tokens=False)["input_ids"]
    return ids * (1 + min_len // len(ids))


def cpu_model() -> str:
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        match = None
    return match.group(1).strip() if match else platform.processor() or "unknown"


def device_name(device: str) -> str:
    """What runs the model: the CPU's model name, or the GPU's for a CUDA device."""
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}); host CPU {cpu_model()}"
    return cpu_model()


def write_results(name: str, section: str, quick: bool) -> None:
    """Replace (or append) the ``name`` section of RESULTS.md; quick runs get their own section."""
    key = f"{name}-quick" if quick else name
    begin, end = f"<!-- {key} begin -->", f"<!-- {key} end -->"
    title = f"bench/{name}.py" + (" --quick (smoke test, not a measurement)" if quick else "")
    block = f"{begin}\n## {title}\n\n{section}\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + f"\n\n{block}\n"
    RESULTS.write_text(text)


def median_ms_interleaved(runs: dict, repeats: int) -> dict[str, float]:
    """Each named call's median wall time (ms) over ``repeats`` rounds that call every one in turn."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}
