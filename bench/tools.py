"""Function calling: schema-valid and correct calls, with the call grammar and without it.

Workload (``tool_cases``): 44 plain-language requests over 12 plain Python functions: 31 that need
one call, 6 that need two (parallel calls), 7 that need none. Every request sees all 12 tools, in
the same prompt (the chat template's own tool rendering, or loomlm's generic system prompt).

Modes, all greedy on SmolLM2-135M-Instruct (``--max-tokens``):

- ``required``: the 37 tool requests, ``tool_choice="required"`` (the call grammar).
- ``named``: the 31 one-call requests, the expected tool named (``tool_choice={"type":
  "function", ...}``, ``parallel_tool_calls=False``).
- ``auto``: all 44, ``tool_choice="auto"`` (free text or calls; a started call is constrained).
- ``unconstrained``: all 44, the same prompt and no grammar; calls are read from the free text
  leniently (every JSON object naming a given tool, inside ``<tool_call>`` tags or not).

Per mode: the share of complete calls that are schema-valid (parse, name a given tool, arguments
validate), the calls cut by ``max_tokens`` (counted apart: the grammar guarantees a valid prefix,
not an end), the share of requests answered correctly (the expected calls, in any order, with the expected
argument values; none for a no-tool request) and the wall time per request of the whole batch.
The modes run interleaved, ``--repeats`` times (the first round of each mode warms compile
caches and is not timed); correctness is the same in every round (greedy), times are medians.

    .venv/bin/python bench/tools.py --quick            # smoke test (not a measurement)
    .venv/bin/python bench/tools.py --write-results    # ~15 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from importlib.metadata import version

import torch
from bench_common import cpu_model, write_results
from tool_cases import CASES, FUNCTIONS, Case, Has

from loomlm import LLM, SamplingParams
from loomlm.grammar.call_formats import HERMES
from loomlm.grammar.specs import OutputParseError
from loomlm.tool_calls import tool_set
from loomlm.tool_prompts import native_call_format, tool_messages

SPECS = {spec.name: spec for spec in tool_set(FUNCTIONS).specs}
MODES = ("required", "named", "auto", "unconstrained")


def conversation(case: Case) -> list[dict]:
    return [{"role": "user", "content": case.request}]


def cases_of(mode: str) -> list[Case]:
    if mode == "required":
        return [case for case in CASES if case.calls]
    if mode == "named":
        return [case for case in CASES if case.kind == "simple"]
    return list(CASES)


def run_mode(llm: LLM, mode: str, params: SamplingParams) -> tuple[float, list[list[tuple[str, dict, bool]]]]:
    """Wall time and, per request, its calls as (name, arguments, schema-valid)."""
    cases = cases_of(mode)
    start = time.perf_counter()
    if mode == "unconstrained":
        tools = tool_set(FUNCTIONS, call_format=native_call_format(llm.tokenizer) or HERMES)
        native = native_call_format(llm.tokenizer) is not None
        conversations, kwargs = [], {}
        for case in cases:
            messages, kwargs = tool_messages(conversation(case), tools, native)
            conversations.append(messages)
        outputs = llm.chat(conversations, params, use_tqdm=False, chat_template_kwargs=kwargs)
        wall = time.perf_counter() - start
        return wall, [lenient_calls(out.outputs[0].text) for out in outputs]
    if mode == "named":
        choice = [{"type": "function", "function": {"name": case.calls[0][0]}} for case in cases]
        outputs = llm.chat(
            [conversation(c) for c in cases], params, use_tqdm=False, tools=FUNCTIONS,
            tool_choice=choice, parallel_tool_calls=False,
        )  # fmt: skip
    else:
        outputs = llm.chat(
            [conversation(c) for c in cases], params, use_tqdm=False, tools=FUNCTIONS, tool_choice=mode
        )
    wall = time.perf_counter() - start
    results = []
    for out in outputs:
        completion = out.outputs[0]
        calls = [(call.name, call.arguments, True) for call in completion.tool_calls or []]
        if completion.parse_error:  # a call cut by max_tokens: neither valid nor invalid, counted apart
            calls.append(("<cut>", {}, False))
        results.append(calls)
    return wall, results


def lenient_calls(text: str) -> list[tuple[str, dict, bool]]:
    """Every JSON object in free text that names a given tool, as a call; valid when its arguments
    (``arguments`` or ``parameters``) validate. ``<tool_call>`` blocks that do not parse count as
    invalid calls."""
    decoder, calls, position = json.JSONDecoder(), [], 0
    while (start := text.find("{", position)) != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        position = end
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            continue
        name = value["name"]
        arguments = value.get("arguments", value.get("parameters"))
        calls.append((name, arguments if isinstance(arguments, dict) else {}, is_valid(name, arguments)))
    found = sum(1 for c in calls if c[2])
    for _ in range(max(0, text.count("<tool_call>") - found)):
        calls.append(("?", {}, False))  # a block that does not parse: an invalid call
    return calls


def is_valid(name: str, arguments: object) -> bool:
    if name not in SPECS or not isinstance(arguments, dict):
        return False
    try:
        SPECS[name].validate_arguments(arguments)
    except OutputParseError:
        return False
    return True


def value_matches(expected: object, actual: object) -> bool:
    if isinstance(expected, Has):
        return isinstance(actual, str) and all(word.lower() in actual.lower() for word in expected.words)
    if isinstance(expected, str):
        return isinstance(actual, str) and actual.strip().lower() == expected.lower()
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        return isinstance(actual, int | float) and float(actual) == float(expected)
    return expected == actual


def call_matches(expected: tuple[str, dict], actual: tuple[str, dict, bool]) -> bool:
    name, arguments = expected
    if actual[0] != name or not actual[2]:
        return False
    properties = SPECS[name].parameters.get("properties", {})
    for key, value in actual[1].items():
        if key in arguments:
            if not value_matches(arguments[key], value):
                return False
        elif value != properties.get(key, {}).get("default"):
            return False  # an argument the request did not ask for, not at its default
    return all(
        key in actual[1] or properties.get(key, {}).get("default") == value
        for key, value in arguments.items()
    )


def is_correct(case: Case, calls: list[tuple[str, dict, bool]]) -> bool:
    if len(calls) != len(case.calls):
        return False
    unmatched = list(calls)
    for expected in case.calls:
        match = next((a for a in unmatched if call_matches(expected, a)), None)
        if match is None:
            return False
        unmatched.remove(match)
    return True


def score(mode: str, results: list[list[tuple[str, dict, bool]]]) -> dict:
    cases = cases_of(mode)
    calls = [call for request in results for call in request if call[0] != "<cut>"]
    return {
        "requests": len(cases),
        "calls": len(calls),
        "cut": sum(call[0] == "<cut>" for request in results for call in request),
        "valid": sum(call[2] for call in calls),
        "correct": sum(is_correct(case, r) for case, r in zip(cases, results, strict=True)),
        "by_kind": {
            kind: (
                sum(is_correct(c, r) for c, r in zip(cases, results, strict=True) if c.kind == kind),
                sum(c.kind == kind for c in cases),
            )
            for kind in ("simple", "parallel", "no-tool")
        },
        "results": results,
    }


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-tokens", type=int, default=160)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (after one warm-up round)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--quick", action="store_true", help="one timed round (smoke test)")
    p.add_argument("--show", action="store_true", help="print every request's calls")
    p.add_argument("--write-results", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.repeats = 1
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    llm = LLM(max_num_seqs=64)
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens)
    walls: dict[str, list[float]] = {mode: [] for mode in MODES}
    scores: dict[str, dict] = {}
    for round_index in range(args.repeats + 1):
        for mode in MODES:
            wall, results = run_mode(llm, mode, params)
            print(f"round {round_index} {mode}: {wall:.1f} s", flush=True)
            if round_index == 0:
                scores[mode] = score(mode, results)
            else:
                walls[mode].append(wall)
    lines = table(scores, walls)
    print("\n".join(lines))
    if args.show:
        for mode in MODES:
            print(f"\n## {mode}")
            for case, calls in zip(cases_of(mode), scores[mode]["results"], strict=True):
                mark = "ok " if is_correct(case, calls) else "BAD"
                print(f"{mark} {case.request!r}: {[(n, a) for n, a, _ in calls]}")
    if args.write_results:
        machine = f"{cpu_model()}, {torch.get_num_threads()} torch threads, {platform.python_version()}"
        header = (
            f"{datetime.date.today()} · {machine} · torch {version('torch')} · SmolLM2-135M-Instruct, "
            f"greedy, max_tokens {args.max_tokens}, {args.repeats} timed rounds (medians)\n\n"
        )
        write_results("tools", header + "\n".join(lines) + "\n", args.quick)


def table(scores: dict[str, dict], walls: dict[str, list[float]]) -> list[str]:
    lines = [
        "| mode | requests | complete calls | schema-valid calls | cut by max_tokens | correct requests "
        "| simple | parallel | no-tool | s / request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        s = scores[mode]
        kinds = [f"{a}/{b}" if b else "-" for a, b in s["by_kind"].values()]
        valid = f"{s['valid']}/{s['calls']} ({s['valid'] / s['calls']:.0%})" if s["calls"] else "0/0"
        per_request = statistics.median(walls[mode]) / s["requests"] if walls[mode] else float("nan")
        lines.append(
            f"| {mode} | {s['requests']} | {s['calls']} | {valid} | {s['cut']} | "
            f"{s['correct']}/{s['requests']} ({s['correct'] / s['requests']:.0%}) | {' | '.join(kinds)} | "
            f"{per_request:.3f} |"
        )
    return lines


if __name__ == "__main__":
    main()
