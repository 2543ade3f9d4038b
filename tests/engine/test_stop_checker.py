"""The one post-sampling stop check: EOS, stop ids, stop strings, grammar termination and length,
with min_tokens deferring every stop the model chooses. Driven through Scheduler.update with
hand-built sampler outputs and the real SmolLM2 tokenizer, so text is decoded as in the engine."""

from __future__ import annotations

from loomlm.engine.config import SchedulerConfig
from loomlm.engine.detokenizer import IncrementalDetokenizer
from loomlm.engine.kv_cache_manager import KVCacheManager
from loomlm.engine.outputs import SamplerOutput
from loomlm.engine.request import Request, RequestStatus
from loomlm.engine.sampling_params import SamplingParams
from loomlm.engine.scheduler import Scheduler
from loomlm.engine.stop_checker import StopChecker, StopDecision, find_stop_string, stop_prefix_len


def char_tokens(tokenizer, text: str) -> list[int]:
    """One token (at least) per character, so stop strings span tokens."""
    return [t for ch in text for t in tokenizer.encode(ch, add_special_tokens=False)]


class OneRequest:
    """A scheduler running one request whose sampled tokens the test dictates."""

    def __init__(self, tokenizer, **params) -> None:
        self.scheduler = Scheduler(SchedulerConfig(max_model_len=512), KVCacheManager(64, 16))
        prompt = tokenizer.encode("Say something:", add_special_tokens=False)
        params.setdefault("max_tokens", 100)
        sampling = SamplingParams(**params)
        self.request = Request("r", prompt, sampling, eos_token_id=tokenizer.eos_token_id)
        self.request.detokenizer = IncrementalDetokenizer(tokenizer, prompt, sampling)
        self.scheduler.add_request(self.request)

    def feed(self, token_ids: list[int]) -> None:
        for token_id in token_ids:
            step = self.scheduler.schedule()
            self.scheduler.update(step, SamplerOutput([token_id]))

    @property
    def text(self) -> str:
        return self.request.detokenizer.output_text


def test_a_stop_string_before_min_tokens_is_passed_over_and_the_text_keeps_growing(tokenizer):
    tokens = char_tokens(tokenizer, "xSTOPyyySTOPzz")
    run = OneRequest(tokenizer, stop=["STOP"], min_tokens=8)
    run.feed(tokens[:5])  # "xSTOP": a stop string inside the first min_tokens tokens
    assert not run.request.is_finished and run.text == "xSTOP"
    run.feed(tokens[5:8])
    assert not run.request.is_finished and run.text == "xSTOPyyy"
    run.feed(tokens[8:12])  # the next "STOP" ends past min_tokens: it is honoured
    assert run.request.finish_reason == "stop" and run.request.stop_reason == "STOP"
    assert run.text == "xSTOPyyy" and run.request.num_output_tokens == 12


def test_a_stop_string_right_after_min_tokens_stops_and_is_cut_from_the_text(tokenizer):
    tokens = char_tokens(tokenizer, "abEND")
    run = OneRequest(tokenizer, stop=["END"], min_tokens=2, include_stop_str_in_output=True)
    run.feed(tokens)
    assert run.request.finish_reason == "stop" and run.text == "abEND"


def test_eos_and_stop_ids_count_only_after_min_tokens(tokenizer):
    eos = tokenizer.eos_token_id
    run = OneRequest(tokenizer, min_tokens=2, stop_token_ids=[42])
    run.feed([eos, 42])  # forced here; the sampler masks both while min_tokens is not reached
    assert not run.request.is_finished
    run.feed([42])
    assert run.request.finish_reason == "stop" and run.request.stop_reason == 42
    run = OneRequest(tokenizer, min_tokens=1)
    run.feed([11, eos])
    assert run.request.finish_reason == "stop" and run.request.stop_reason is None


def test_a_stop_on_the_last_allowed_token_is_a_stop_not_length(tokenizer):
    run = OneRequest(tokenizer, max_tokens=3)
    run.feed([11, 12, tokenizer.eos_token_id])
    assert run.request.finish_reason == "stop"
    run = OneRequest(tokenizer, max_tokens=3, ignore_eos=True)
    run.feed([11, 12, tokenizer.eos_token_id])
    assert run.request.finish_reason == "length"


class TerminatedGrammar:
    def is_terminated(self) -> bool:
        return True

    def accept_token(self, token_id: int) -> bool:
        return True


def test_grammar_termination_ends_the_request_even_before_min_tokens(tokenizer):
    # A complete structured output admits no further token: min_tokens cannot defer it.
    run = OneRequest(tokenizer, min_tokens=5)
    run.request.grammar = TerminatedGrammar()
    run.feed([11])
    assert run.request.finish_reason == "stop" and run.request.num_output_tokens == 1


def test_the_check_is_a_pure_query(tokenizer):
    params = SamplingParams(stop=["b"], max_tokens=10)
    request = Request("r", [1, 2], params, eos_token_id=0)
    request.detokenizer = IncrementalDetokenizer(tokenizer, [1, 2], params)
    (b,) = char_tokens(tokenizer, "b")
    request.append_output_token(b)
    new_text = request.detokenizer.update([b])
    checker = StopChecker(max_model_len=100)
    first = checker.check(request, len(new_text))
    assert (
        first
        == checker.check(request, len(new_text))
        == StopDecision(RequestStatus.FINISHED_STOPPED, stop_reason="b", text_end=0)
    )
    assert request.status == RequestStatus.WAITING and request.detokenizer.output_text == "b"


def test_stop_string_search_only_counts_matches_overlapping_new_text():
    text = "STOP then ST"
    assert find_stop_string(text, ["STOP"], new_from=len(text) - 2) is None  # the old match is old
    assert find_stop_string(text + "OP", ["STOP"], new_from=len(text)) == (10, "STOP")
    assert find_stop_string("xxabc", ["abc", "bc"], new_from=4) == (2, "abc")  # earliest start wins
    assert stop_prefix_len("hello ST", ["STOP"], start=0) == 2
    assert stop_prefix_len("hello ST", ["STOP"], start=7) == 0  # "S" was sent: "T" alone is no prefix
    assert stop_prefix_len("hello", ["STOP"], start=0) == 0
