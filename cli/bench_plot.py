"""The PNG of ``loomlm bench --plot``: histograms of time to first token and end-to-end latency,
and output tokens/s over the run. matplotlib with the Agg backend (no display needed), imported only
when plotting."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def token_rate(records: list[Any], duration: float, bins: int = 40) -> tuple[list[float], list[float]]:
    """(bin centers in s, output tokens/s per bin) from the requests' (time, tokens) events."""
    bins = max(1, bins)
    width = max(duration, 1e-9) / bins
    counts = [0] * bins
    for record in records:
        for when, tokens in record.events:
            counts[min(bins - 1, max(0, int(when / width)))] += tokens
    return [(i + 0.5) * width for i in range(bins)], [c / width for c in counts]


def write_plot(path: Path, records: list[Any], duration: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # before pyplot; no display on a server
    import matplotlib.pyplot as plt

    done = [r for r in records if r.error is None and r.end is not None]
    ttft = [(r.first - r.start) * 1000 for r in done if r.first is not None]
    e2e = [(r.end - r.start) * 1000 for r in done]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    try:
        for ax, values, name, color in (
            (axes[0], ttft, "time to first token", "C0"),
            (axes[1], e2e, "end to end", "C1"),
        ):
            if values:
                ax.hist(values, bins=min(30, max(5, len(values) // 2)), color=color, alpha=0.85)
            ax.set_xlabel("latency (ms)")
            ax.set_ylabel("requests")
            ax.yaxis.get_major_locator().set_params(integer=True)
            ax.set_title(f"{name} latency")
        # About five engine steps (distinct delta times) per bin, so a bin is never emptier than a step.
        steps = len({round(when, 4) for r in done for when, _ in r.events})
        centers, rates = token_rate(done, duration, bins=max(4, min(60, steps // 5)))
        axes[2].plot(centers, rates, marker=".", color="C2")
        axes[2].set_xlabel("time since the first request (s)")
        axes[2].set_ylabel("output tokens/s")
        axes[2].set_title("output throughput over time")
        axes[2].set_ylim(bottom=0)
        fig.suptitle(f"loomlm bench: {title}")
        fig.tight_layout()
        fig.savefig(path, dpi=100, format="png")
    finally:
        plt.close(fig)
