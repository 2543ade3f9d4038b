"""``loomlm bench``: a small run completes every request with the tokens asked for, reports
ordered latency percentiles and consistent throughput, writes a PNG plot; the summary arithmetic
is checked on hand-made records; impossible workloads are usage errors."""

from __future__ import annotations

import json

import pytest

from loomlm.cli.bench import RequestRecord, make_prompts, summarize
from loomlm.cli.bench_plot import token_rate
from loomlm.cli.main import main

SMALL = ["--num-prompts", "4", "--input-len", "16", "--output-len", "8", "--no-progress"]


def test_small_run_reports_json_and_writes_a_png(model_args, tmp_path, capsys):
    plot = tmp_path / "bench.png"
    code = main(["bench", *SMALL, "--json", "--plot", str(plot), *model_args])
    out, err = capsys.readouterr()
    assert code == 0, err
    results = json.loads(out)
    assert results["num_prompts"] == 4 and results["completed"] == 4 and results["failed"] == 0
    assert results["output_tokens"] == 4 * 8  # ignore_eos: exactly --output-len each
    duration = results["duration_s"]
    assert results["requests_per_s"] == pytest.approx(4 / duration)
    assert results["output_tokens_per_s"] == pytest.approx(32 / duration)
    assert results["total_tokens_per_s"] == pytest.approx((4 * 16 + 32) / duration)
    for key in ("ttft_ms", "tpot_ms", "e2e_ms"):
        row = results[key]
        assert 0 < row["p50"] <= row["p90"] <= row["p99"], (key, row)
    assert results["ttft_ms"]["p50"] <= results["e2e_ms"]["p50"] <= duration * 1000
    data = plot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_table_output_and_progress_bar(model_args, capsys):
    argv = ["bench", "--num-prompts", "3", "--input-len", "8", "--output-len", "4", "--request-rate", "50"]
    assert main([*argv, "--warmup", "0", *model_args]) == 0
    out, err = capsys.readouterr()
    for words in ("requests/s", "output tokens/s", "TTFT", "TPOT", "end to end", "p99", "3 (0 failed)"):
        assert words in out, words
    assert "bench" in err and "3/3" in err  # the tqdm bar on stderr


def test_workload_longer_than_the_context_is_a_usage_error(model_args, capsys):
    assert main(["bench", "--input-len", "250", "--output-len", "10", *model_args]) == 2
    assert "--max-model-len" in capsys.readouterr().err


def test_plot_into_a_missing_folder_fails_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("loomlm.cli.bench.load_llm", lambda *a, **k: pytest.fail("loaded the model"))
    assert main(["bench", "--plot", str(tmp_path / "nope" / "b.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_summary_arithmetic_on_known_records():
    records = [
        RequestRecord(
            start=0.0, prompt_tokens=10, first=0.1, end=0.5, output_tokens=5, events=[(0.1, 1), (0.5, 4)]
        ),
        RequestRecord(start=0.2, prompt_tokens=10, first=0.4, end=1.0, output_tokens=4, events=[(0.4, 4)]),
        RequestRecord(start=0.3, prompt_tokens=10, end=0.35, error="boom"),
    ]
    results = summarize(records, duration=1.0, stats={"num_preemptions": 2})
    assert (results["completed"], results["failed"], results["preemptions"]) == (2, 1, 2)
    assert results["output_tokens"] == 9 and results["output_tokens_per_s"] == pytest.approx(9.0)
    assert results["total_tokens_per_s"] == pytest.approx(29.0)  # failed requests count nothing
    assert results["ttft_ms"]["mean"] == pytest.approx(150.0)  # 100 and 200 ms
    assert results["e2e_ms"]["p50"] == pytest.approx(650.0)  # 500 and 800 ms
    assert results["tpot_ms"]["mean"] == pytest.approx((100.0 + 200.0) / 2)  # 400/4 and 600/3 ms
    centers, rates = token_rate(records[:2], duration=1.0, bins=2)
    assert centers == [0.25, 0.75] and rates == [10.0, 8.0]  # 5 tokens in [0, .5), 4 in [.5, 1]


def test_prompts_are_seeded_and_avoid_special_tokens(offline):
    tokenizer = offline.tokenizer
    prompts = make_prompts(tokenizer, 3, 50, seed=1)
    assert prompts == make_prompts(tokenizer, 3, 50, seed=1) != make_prompts(tokenizer, 3, 50, seed=2)
    assert all(len(p) == 50 for p in prompts)
    assert not set(tokenizer.all_special_ids) & {t for p in prompts for t in p}
