"""Validity runs behind ``grammar_corpus.py``: generate under each accepted schema and check every
finished output against the schema with ``jsonschema`` (Draft 2020-12 and its format checker, as
``GrammarSpec.parse`` does), independently of the engine's own parse.

Two models: a tiny random Llama (the recipe of ``tests/conftest.py``: 2 layers, hidden 64, the
SmolLM2 tokenizer; random weights, so temperature 1 explores the grammar widely and fast), and the
real SmolLM2-135M-Instruct, greedy, on a small sample with the schema in the prompt."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from loomlm import LLM, SamplingParams
from loomlm.grammar.compiler import CompilerConfig

OUTCOMES = ("valid", "length", "invalid", "error", "unchecked")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
_SCHEMA_PROMPT_CHARS = 1500


def build_tiny_llama(out_dir: Path, smollm2_dir: Path) -> Path:
    """A 2-layer random Llama on the SmolLM2 vocabulary (tests/conftest.py's ``_build_tiny_llama``)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        initializer_range=0.2,  # decisive (peaked) random logits
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.float32).eval().save_pretrained(out_dir)
    for name in _TOKENIZER_FILES:
        if (smollm2_dir / name).is_file():
            shutil.copy(smollm2_dir / name, out_dir / name)
    return out_dir


def make_llm(model_dir: str | None, backend: str, cache_dir: Path, timeout_s: float, **kwargs: Any) -> LLM:
    """An engine on ``backend`` whose outlines compiles read the grammars the cold phase left in
    ``cache_dir`` (the same tokenizer and vocabulary size, so the same cache keys)."""
    grammar = CompilerConfig(cache_dir=cache_dir, timeout_s=timeout_s, memory_cache_size=8)
    return LLM(model_dir, grammar_backend=backend, grammar=grammar, enable_prefix_caching=True, **kwargs)


def classify(output: Any, schema: Any) -> str:
    """valid / length (stopped at max_tokens: not judged) / invalid (not JSON, or violates the
    schema) / error (the request failed: no allowed token, compile error) / unchecked (jsonschema
    itself cannot check this schema, e.g. a pattern Python's ``re`` does not read)."""
    if output.error is not None:
        return "error"
    completion = output.outputs[0]
    if completion.finish_reason == "length":
        return "length"
    if completion.finish_reason != "stop":
        return "error"
    try:
        value = json.loads(completion.text)
    except json.JSONDecodeError:
        return "invalid"
    try:
        validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        return "valid" if validator.is_valid(value) else "invalid"
    except Exception:  # an unreadable pattern or an unresolvable $ref in the schema itself
        return "unchecked"


def run_validity(
    llm: LLM, items: list[tuple[str, Any]], params: list[SamplingParams], prompts: list[Any]
) -> tuple[Counter, list[str]]:
    """Generate ``prompts[i]`` under ``params[i]`` (whose format is ``items[i]``'s schema), classify
    every output. Returns the counts and a line per invalid or failed output (name and text)."""
    counts: Counter = Counter({outcome: 0 for outcome in OUTCOMES})
    problems: list[str] = []
    outputs = llm.generate(prompts, params, use_tqdm=False)
    for (name, schema), output in zip(items, outputs, strict=True):
        outcome = classify(output, schema)
        counts[outcome] += 1
        if outcome in ("invalid", "error"):
            detail = output.error or output.outputs[0].parse_error or ""
            problems.append(f"{outcome} {name}: {detail[:160]} | {output.outputs[0].text[:160]!r}")
    return counts, problems


def tiny_validity(
    llm: LLM, items: list[tuple[str, Any]], seeds: int, max_tokens: int, chunk: int = 32
) -> tuple[Counter, list[str]]:
    """Every schema ``seeds`` times at temperature 1, ``chunk`` schemas per generate call (each
    request holds its compiled grammar until it finishes, and some outlines automata are hundreds
    of MB). The samples differ through the engine's own generator (``LLM(seed=...)``): a per-request
    ``SamplingParams.seed`` costs a generator per row per step (~7 ms each on this CPU)."""
    counts: Counter = Counter({outcome: 0 for outcome in OUTCOMES})
    problems: list[str] = []
    for first in range(0, len(items), chunk):
        runs = [item for item in items[first : first + chunk] for _ in range(seeds)]
        params = [
            SamplingParams(temperature=1.0, max_tokens=max_tokens, response_format=schema)
            for _, schema in runs
        ]
        found_counts, found = run_validity(llm, runs, params, ["Output JSON:"] * len(runs))
        counts.update(found_counts)
        problems += found
        print(f"  {first + len(runs) // seeds}/{len(items)} schemas: {dict(counts)}", flush=True)
    return counts, problems


def smol_validity(llm: LLM, items: list[tuple[str, Any]], max_tokens: int) -> tuple[Counter, list[str]]:
    """Greedy, the schema (cut to ~1500 characters) in the system prompt."""
    processor = llm.engine.processor
    prompts = []
    for _, schema in items:
        text = json.dumps(schema, separators=(",", ":"))[:_SCHEMA_PROMPT_CHARS]
        messages = [
            {"role": "system", "content": f"Reply with one JSON value that follows this JSON Schema: {text}"},
            {"role": "user", "content": "Give a realistic example."},
        ]
        prompts.append(processor.apply_chat_template(messages))
    params = [SamplingParams(temperature=0, max_tokens=max_tokens, response_format=s) for _, s in items]
    return run_validity(llm, items, params, prompts)


def spread_sample(names: list[str], count: int) -> list[str]:
    """``count`` names spread evenly over the sorted list (so over the subsets, which sort by prefix)."""
    names = sorted(names)
    if len(names) <= count:
        return names
    return [names[(i * len(names)) // count] for i in range(count)]
