"""Teacher-forced greedy comparison of a lower-precision engine against the float32 one, for the
bf16-weight and bf16-cache tests: a free-running comparison on a random tiny model would follow the
first flipped near-tie off into another text, so each position is asked on its own."""

from loomlm.engine.sampling_params import SamplingParams

NEAR_TIE_NATS = 0.1  # how far below float32's best a choice may score (bf16 moves logits by hundredths)


def finished(engine) -> dict[str, object]:
    """Step the engine until it is idle; each request's first completion, by request id."""
    done = {}
    while engine.has_unfinished_requests():
        for output in engine.step(only_finished=True):
            done[output.request_id] = output.outputs[0]
    return done


def greedy_reference(engine, prompt: list[int], max_tokens: int = 12):
    """The (float32) engine's greedy completion of ``prompt``, with each position's top-5 logprobs."""
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, logprobs=5)
    engine.add_request(prompt, params, prompt_token_ids=prompt)
    (reference,) = finished(engine).values()
    return reference


def assert_teacher_forced_near(engine, prompt: list[int], reference, min_equal: int) -> None:
    """At every position of ``reference`` (float32's greedy completion of ``prompt``, with top-5
    logprobs), ``engine``'s greedy choice after float32's prefix is float32's choice or a near-tie
    of it, and at least ``min_equal`` positions choose exactly float32's token."""
    params = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    for i in range(len(reference.token_ids)):
        prefix = prompt + reference.token_ids[:i]
        engine.add_request(prefix, params, prompt_token_ids=prefix, request_id=f"pos{i:03d}")
    chosen = [output.token_ids[0] for _, output in sorted(finished(engine).items())]
    for i, token in enumerate(chosen):
        float_logprobs = {t: lp.logprob for t, lp in reference.logprobs[i].items()}
        near = max(float_logprobs.values()) - NEAR_TIE_NATS
        assert token in float_logprobs and float_logprobs[token] >= near, (i, token, float_logprobs)
    assert sum(a == b for a, b in zip(chosen, reference.token_ids, strict=True)) >= min_equal
