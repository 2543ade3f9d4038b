"""Driving an engine in tests: add requests, step until it is idle, the finished outputs by id."""

from __future__ import annotations

from loomlm.engine.engine import LLMEngine
from loomlm.engine.outputs import RequestOutput
from loomlm.engine.sampling_params import SamplingParams


def run_to_completion(engine: LLMEngine) -> dict[str, RequestOutput]:
    """Step until no request is left; each finished request's output, by request id."""
    finished = {}
    while engine.has_unfinished_requests():
        finished.update({output.request_id: output for output in engine.step() if output.finished})
    return finished


def run_requests(
    engine: LLMEngine, requests: dict[str, tuple[str, SamplingParams]]
) -> dict[str, RequestOutput]:
    """Add ``{request_id: (prompt, params)}`` and run them (and anything already queued) to completion."""
    for request_id, (prompt, params) in requests.items():
        engine.add_request(prompt, params, request_id=request_id)
    return run_to_completion(engine)
