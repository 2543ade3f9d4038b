"""StopChecker: the one post-sampling stop decision, run once per request per step.

Every way a request can end after a token is decided here, in this order: EOS, a stop token id, a
stop string, grammar termination, then length (``max_tokens`` or the model's context). As in vLLM,
EOS, stop token ids and stop strings count only from output token ``min_tokens + 1`` on (the
sampler masks EOS and stop ids before that, and text keeps growing past a stop string seen early).
Grammar termination is the exception: a complete structured output admits no further token.

``check`` is a pure query over the request; the scheduler applies its decision."""

from __future__ import annotations

from dataclasses import dataclass

from loomlm.engine.request import Request, RequestStatus


@dataclass(slots=True, frozen=True)
class StopDecision:
    status: RequestStatus
    # The stop token id or stop string that ended the request (None for EOS, grammar, length).
    stop_reason: int | str | None = None
    # For a stop string: the output text is cut to this many characters.
    text_end: int | None = None


def find_stop_string(text: str, stops: list[str], new_from: int) -> tuple[int, str] | None:
    """The earliest match (position, stop string) that ends after ``text[:new_from]``, i.e. that
    overlaps the new text; the shortest stop string wins a tie, since it ends first. Matches wholly
    inside older text were seen by earlier checks (or fell before ``min_tokens``)."""
    best: tuple[int, str] | None = None
    for stop in stops:
        # A match overlapping the new text starts at most len(stop) - 1 characters before it.
        index = text.find(stop, max(0, new_from - len(stop) + 1))
        if index != -1 and (best is None or (index, len(stop)) < (best[0], len(best[1]))):
            best = (index, stop)
    return best


def stop_prefix_len(text: str, stops: list[str], start: int) -> int:
    """Length of the longest tail of ``text[start:]`` that is a proper prefix of a stop string: a
    stream holds it back, since it may become a stop string that is then cut off."""
    longest = min(max((len(s) for s in stops), default=1) - 1, len(text) - start)
    for n in range(longest, 0, -1):
        tail = text[-n:]
        if any(stop.startswith(tail) for stop in stops):
            return n
    return 0


class StopChecker:
    def __init__(self, max_model_len: int) -> None:
        self.max_model_len = max_model_len

    def check(self, request: Request, num_new_chars: int) -> StopDecision | None:
        """Whether ``request`` ends with the token it just appended, whose text added the last
        ``num_new_chars`` characters of the detokenized output."""
        params = request.sampling_params
        token_id = request.all_token_ids[-1]
        if request.num_output_tokens > params.min_tokens:
            if token_id == request.eos_token_id and not params.ignore_eos:
                return StopDecision(RequestStatus.FINISHED_STOPPED)
            if token_id in params.stop_token_ids:
                return StopDecision(RequestStatus.FINISHED_STOPPED, stop_reason=token_id)
            if params.stop and request.detokenizer is not None:
                decision = self._stop_string(request, num_new_chars)
                if decision is not None:
                    return decision
        if request.grammar is not None and request.grammar.is_terminated():
            return StopDecision(RequestStatus.FINISHED_STOPPED)
        if request.num_output_tokens >= params.max_tokens or request.num_tokens >= self.max_model_len:
            return StopDecision(RequestStatus.FINISHED_LENGTH)
        return None

    @staticmethod
    def _stop_string(request: Request, num_new_chars: int) -> StopDecision | None:
        params = request.sampling_params
        text = request.detokenizer.output_text
        match = find_stop_string(text, params.stop, len(text) - num_new_chars)
        if match is None:
            return None
        index, stop = match
        end = index + len(stop) if params.include_stop_str_in_output else index
        return StopDecision(RequestStatus.FINISHED_STOPPED, stop_reason=stop, text_end=end)
