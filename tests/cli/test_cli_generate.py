"""``loomlm generate``: plain, JSON and streamed outputs equal ``LLM.generate`` on the same model;
bad options and inputs are one-line errors with exit code 2; a prompt that cannot run is exit 1."""

from __future__ import annotations

import io
import json

from loomlm import SamplingParams
from loomlm.cli.main import main

PROMPTS = ["The capital of France is", "Once upon a time"]


def test_greedy_output_equals_llm_generate(model_args, offline, capsys):
    expected = offline.generate(PROMPTS[:1], SamplingParams(temperature=0, max_tokens=12))
    code = main(["generate", PROMPTS[0], "--temperature", "0", "--max-tokens", "12", *model_args])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == expected[0].outputs[0].text + "\n"
    assert len(expected[0].outputs[0].token_ids) > 0


def test_several_prompts_print_in_order_under_headers(model_args, offline, capsys):
    expected = offline.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=6, stop=["e"]))
    code = main(["generate", *PROMPTS, "--temperature", "0", "--max-tokens", "6", "--stop", "e", *model_args])
    out, _ = capsys.readouterr()
    assert code == 0
    texts = [o.outputs[0].text for o in expected]
    assert out == f"=== prompt 1 ===\n{texts[0]}\n=== prompt 2 ===\n{texts[1]}\n"


def test_json_lines_hold_text_finish_reason_and_token_counts(model_args, offline, capsys):
    params = SamplingParams(temperature=0.8, seed=7, n=2, max_tokens=5, ignore_eos=True)
    expected = offline.generate(PROMPTS, params)
    args = ["--temperature", "0.8", "--seed", "7", "-n", "2", "--max-tokens", "5", "--ignore-eos", "--json"]
    code = main(["generate", *PROMPTS, *args, *model_args])
    out, _ = capsys.readouterr()
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["prompt_index"], r["index"]) for r in records] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for record in records:
        output = expected[record["prompt_index"]]
        completion = output.outputs[record["index"]]
        assert record["text"] == completion.text
        assert record["finish_reason"] == "length"
        assert record["completion_tokens"] == 5
        assert record["prompt_tokens"] == len(output.prompt_token_ids)


def test_stream_prints_the_same_text_as_generate(model_args, offline, capsys):
    expected = offline.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=10))
    code = main(["generate", *PROMPTS, "--stream", "--temperature", "0", "--max-tokens", "10", *model_args])
    out, _ = capsys.readouterr()
    assert code == 0
    texts = [o.outputs[0].text for o in expected]
    assert out == f"=== prompt 1 ===\n{texts[0]}\n=== prompt 2 ===\n{texts[1]}\n"


def test_stream_json_deltas_join_to_the_final_record(model_args, offline, capsys):
    expected = offline.generate(PROMPTS[:1], SamplingParams(temperature=0, max_tokens=10, ignore_eos=True))
    args = ["--stream", "--json", "--temperature", "0", "--max-tokens", "10", "--ignore-eos"]
    assert main(["generate", PROMPTS[0], *args, *model_args]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    deltas, final = records[:-1], records[-1]
    assert len(deltas) >= 2 and not any(r["finished"] for r in deltas)
    assert final["finished"] and final["finish_reason"] == "length" and final["completion_tokens"] == 10
    assert "".join(r["text"] for r in deltas) == final["text"] == expected[0].outputs[0].text


def test_prompt_from_stdin(model_args, offline, capsys, monkeypatch):
    expected = offline.generate(PROMPTS[1:], SamplingParams(temperature=0, max_tokens=6))
    monkeypatch.setattr("sys.stdin", io.StringIO(PROMPTS[1] + "\n"))
    assert main(["generate", "-", "--temperature", "0", "--max-tokens", "6", *model_args]) == 0
    assert capsys.readouterr().out == expected[0].outputs[0].text + "\n"


def test_a_prompt_that_cannot_run_fails_alone_with_exit_code_1(tiny_llama_dir, capsys):
    long_prompt = "word " * 200  # over --max-model-len 32
    args = [
        "--model",
        str(tiny_llama_dir),
        "--max-model-len",
        "32",
        "--temperature",
        "0",
        "--max-tokens",
        "4",
    ]
    code = main(["generate", "short", long_prompt, "--json", *args])
    out, err = capsys.readouterr()
    assert code == 1
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0]["prompt_index"] == 0 and records[0]["completion_tokens"] >= 1
    assert records[1]["prompt_index"] == 1 and records[1]["finish_reason"] == "error" and records[1]["error"]
    assert "prompt 2:" in err and "Traceback" not in err


def test_usage_errors_exit_2_with_one_line(model_args, tmp_path, capsys):
    cases = [
        (["generate", "x", "--stream", "-n", "2"], "--stream"),
        (["generate", "x", "--temperature", "-1"], "temperature"),
        (["generate", "x", "--model", str(tmp_path / "missing")], "not a local directory"),
        (["generate", "x", *model_args, "--block-size", "3"], "power of two"),
        (["generate", "x", "--kv-cache-bytes", "lots"], "size"),
        (["generate", "x", "--adapter", "no-equals-sign"], "NAME=PATH"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, (argv, err)
        assert "error:" in err.strip().splitlines()[-1], err
