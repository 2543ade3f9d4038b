"""Helpers shared by the LoRA engine tests: run a batch, record every sampling row's logits, and
check them and the greedy tokens against PEFT."""

import random

import torch

from loomlm.engine.sampling_params import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)


def record_logits(engine, monkeypatch) -> dict[str, list[torch.Tensor]]:
    """Capture every sampling row's logits per request id (and the adapters of each step)."""
    rows: dict[str, list[torch.Tensor]] = {}
    build, execute = engine.input_builder.build, engine.executor.execute
    step_plans = []

    def building(scheduler_output):
        step_plans.append(scheduler_output)
        return build(scheduler_output)

    def recording(model_input):
        scheduler_output = step_plans[-1]
        adapters = {c.request.adapter for c in scheduler_output.chunks if c.request.adapter is not None}
        rows.setdefault("adapters per step", []).append(adapters)
        logits = execute(model_input)
        for chunk, row in zip(scheduler_output.sampling_chunks, logits, strict=True):
            rows.setdefault(chunk.request.request_id, []).append(row.clone())
        return logits

    monkeypatch.setattr(engine.input_builder, "build", building)
    monkeypatch.setattr(engine.executor, "execute", recording)
    return rows


def run(engine, items, params=GREEDY) -> dict[str, object]:
    """``items``: (request_id, prompt_token_ids, adapter name or None). Returns finished outputs."""
    for request_id, prompt, adapter in items:
        engine.add_request(prompt, params, request_id=request_id, prompt_token_ids=prompt, adapter=adapter)
    outputs = {}
    while engine.has_unfinished_requests():
        for output in engine.step(only_finished=True):
            outputs[output.request_id] = output
    return outputs


def prompts(seed, count, low, high):
    rng = random.Random(seed)
    return [[rng.randrange(49152) for _ in range(rng.randint(low, high))] for _ in range(count)]


def assert_peft_parity(outputs, rows, items, model_dir, adapter_dirs, peft_logits):
    for request_id, prompt, adapter in items:
        tokens = outputs[request_id].outputs[0].token_ids
        expected = peft_logits(model_dir, adapter_dirs.get(adapter), prompt + tokens[:-1])
        expected = expected[len(prompt) - 1 :]
        got = torch.stack(rows[request_id])
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4, msg=f"{request_id} ({adapter})")
        assert tokens == expected.argmax(-1).tolist(), f"{request_id} ({adapter}) greedy tokens differ"
