"""The grammar mask fill overlapping the forward (``StructuredOutputManager.start_fill``).

The same mixed batch (llguidance- and outlines-constrained requests and free ones, greedy and seeded)
gives the same tokens with the overlap on and off, and on it fills on the worker thread; an error
raised inside a fill, or by the forward while a fill runs, reaches the caller of ``step``; a batch
without constrained rows hands nothing to the worker; ``close`` stops the worker. The overlap is
off by default (``OVERLAP_FILL``): these tests switch it on."""

from __future__ import annotations

import threading

import pytest

from loomlm.engine.config import CacheConfig, EngineConfig, SchedulerConfig
from loomlm.engine.engine import LLMEngine
from loomlm.engine.sampling_params import SamplingParams
from loomlm.engine.structured_output import OVERLAP_FILL, StructuredOutputManager
from loomlm.grammar.backends.llguidance import LlguidanceGrammarState
from loomlm.grammar.bitmask import TokenBitmask
from loomlm.grammar.compiler import CompilerConfig

SHORT = {"type": "string", "maxLength": 6}
# Nested, so that llguidance's masks are not all trivial.
LLG_SCHEMA = {
    "type": "object",
    "properties": {
        "name": SHORT,
        "items": {
            "type": "array",
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {"k": SHORT, "v": {"type": "integer", "minimum": 0, "maximum": 99}},
                "required": ["k", "v"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["name", "items"],
    "additionalProperties": False,
}
# llguidance approximates format "date", so under ``auto`` this one goes to outlines-core.
OUTLINES_SCHEMA = {
    "type": "object",
    "properties": {"day": {"type": "string", "format": "date"}, "n": {"type": "integer", "maximum": 300}},
    "required": ["day", "n"],
    "additionalProperties": False,
}


def make_engine(model_dir) -> LLMEngine:
    return LLMEngine(
        EngineConfig(
            model=str(model_dir),
            scheduler=SchedulerConfig(max_model_len=256, max_num_seqs=16, max_num_batched_tokens=512),
            # No prefix cache: a second run of the same prompts computes exactly what the first did.
            cache=CacheConfig(block_size=16, num_blocks=512, enable_prefix_caching=False),
            grammar=CompilerConfig(cache_dir=None, timeout_s=60),
            grammar_backend="auto",
        )
    )


@pytest.fixture()
def engine(tiny_llama_dir):
    engine = make_engine(tiny_llama_dir)
    yield engine
    engine.close()


def mixed_batch() -> dict[str, tuple[str, SamplingParams]]:
    batch = {}
    for i in range(3):
        for mode, extra in (
            ("greedy", {"temperature": 0.0}),
            ("seeded", {"temperature": 1.0, "seed": 7 + i}),
        ):
            batch[f"llg-{mode}-{i}"] = (
                f"Order {i}:",
                SamplingParams(max_tokens=24, response_format=LLG_SCHEMA, **extra),
            )
            batch[f"outlines-{mode}-{i}"] = (
                f"Date {i}:",
                SamplingParams(max_tokens=24, response_format=OUTLINES_SCHEMA, **extra),
            )
            batch[f"free-{mode}-{i}"] = (
                f"Text {i}:",
                SamplingParams(max_tokens=12, ignore_eos=True, **extra),
            )
    return batch


def run(engine: LLMEngine, batch: dict) -> dict[str, list[int]]:
    for request_id, (prompt, params) in batch.items():
        engine.add_request(prompt, params, request_id=request_id)
    tokens = {}
    while engine.has_unfinished_requests():
        for output in engine.step():
            if output.finished:
                assert output.outputs[0].finish_reason != "error", output.outputs[0]
                tokens[output.request_id] = list(output.outputs[0].token_ids)
    return tokens


@pytest.fixture()
def fill_threads(monkeypatch) -> list[str]:
    """The names of the threads that ran each TokenBitmask.fill_host."""
    names: list[str] = []
    fill_host = TokenBitmask.fill_host

    def recording(self, states):
        names.append(threading.current_thread().name)
        return fill_host(self, states)

    monkeypatch.setattr(TokenBitmask, "fill_host", recording)
    return names


def test_outputs_are_identical_with_the_overlap_on_and_off(engine, fill_threads):
    batch = mixed_batch()
    _, llg = engine.structured_output.resolve(LLG_SCHEMA)
    _, outlines = engine.structured_output.resolve(OUTLINES_SCHEMA)
    assert (llg.backend, outlines.backend) == ("llguidance", "outlines")

    engine.structured_output.overlap_fill = True
    on = run(engine, batch)
    on_threads = set(fill_threads)
    fill_threads.clear()
    engine.structured_output.overlap_fill = False
    off = run(engine, batch)

    assert on == off
    assert set(on) == set(batch)
    assert on_threads and all(name.startswith("loomlm-mask-fill") for name in on_threads)
    assert set(fill_threads) == {threading.current_thread().name}
    # The batch really mixed both backends, and the constrained outputs are not all empty.
    assert all(len(on[rid]) > 0 for rid in batch)


def test_an_error_inside_a_fill_reaches_the_caller_of_step(engine, monkeypatch):
    raised_in: list[str] = []

    def broken(self, row):
        raised_in.append(threading.current_thread().name)
        raise RuntimeError("mask fill failed")

    monkeypatch.setattr(LlguidanceGrammarState, "fill_bitmask", broken)
    engine.structured_output.overlap_fill = True
    engine.add_request("Order:", SamplingParams(max_tokens=8, response_format=LLG_SCHEMA), request_id="x")
    with pytest.raises(RuntimeError, match="mask fill failed"):
        for _ in range(100):  # the first steps may wait for the compile
            engine.step()
    assert raised_in and raised_in[0].startswith("loomlm-mask-fill")


def test_an_error_in_the_forward_wins_after_the_fill_is_joined(engine, monkeypatch):
    engine.structured_output.overlap_fill = True
    engine.add_request("Order:", SamplingParams(max_tokens=8, response_format=LLG_SCHEMA), request_id="x")
    engine.structured_output.wait_for_compiles(engine.scheduler.waiting, 60)
    fills = []
    start_fill = engine.structured_output.start_fill

    def spying_start_fill(requests):
        fills.append(start_fill(requests))
        return fills[-1]

    def broken_execute(model_input):
        raise ValueError("forward failed")

    monkeypatch.setattr(engine.structured_output, "start_fill", spying_start_fill)
    monkeypatch.setattr(engine.executor, "execute", broken_execute)
    with pytest.raises(ValueError, match="forward failed"):
        engine.step()
    assert fills and fills[0] is not None and fills[0]._future.done()


def test_free_batches_hand_nothing_to_the_worker_and_close_stops_it(tiny_llama_dir, fill_threads):
    engine = make_engine(tiny_llama_dir)
    engine.structured_output.overlap_fill = True
    try:
        run(engine, {"free": ("Text:", SamplingParams(max_tokens=4, ignore_eos=True))})
        assert engine.structured_output._fill_worker is None and not fill_threads
        run(engine, {"json": ("Order:", SamplingParams(max_tokens=4, response_format=LLG_SCHEMA))})
        assert engine.structured_output._fill_worker is not None
        workers = [t for t in threading.enumerate() if t.name.startswith("loomlm-mask-fill")]
        assert workers
    finally:
        engine.close()
    assert engine.structured_output._fill_worker is None
    assert not any(t.is_alive() for t in workers)


def test_the_overlap_is_a_manager_keyword_with_a_module_default(tokenizer):
    def manager(**kwargs):
        return StructuredOutputManager(tokenizer, vocab_size=49152, max_num_seqs=4, **kwargs)

    assert manager().overlap_fill is OVERLAP_FILL
    assert manager(overlap_fill=True).overlap_fill is True
    assert manager(overlap_fill=False).overlap_fill is False
