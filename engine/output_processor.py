"""OutputProcessor: groups a prompt's ``n`` child requests back into one RequestOutput."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loomlm.engine.outputs import CompletionOutput, Logprob, RequestOutput
from loomlm.engine.request import Request
from loomlm.grammar.specs import OutputParseError


@dataclass(slots=True)
class _Group:
    request_id: str
    prompt: str | None
    children: list[Request]


class OutputProcessor:
    def __init__(self) -> None:
        self._groups: dict[str, _Group] = {}  # parent id -> group
        self._parent_of: dict[str, str] = {}  # child id -> parent id

    def add(self, request_id: str, prompt: str | None, children: list[Request]) -> None:
        self._groups[request_id] = _Group(request_id, prompt, children)
        for child in children:
            self._parent_of[child.request_id] = request_id

    def child_ids(self, request_id: str) -> list[str]:
        group = self._groups.get(request_id)
        return [child.request_id for child in group.children] if group else []

    def process(self, updated: list[Request], only_finished: bool = False) -> list[RequestOutput]:
        """RequestOutputs for the groups touched by ``updated``; finished groups are released."""
        outputs = []
        seen: set[str] = set()
        for request in updated:
            parent_id = self._parent_of.get(request.request_id)
            if parent_id is None or parent_id in seen:
                continue
            seen.add(parent_id)
            group = self._groups[parent_id]
            finished = all(child.is_finished for child in group.children)
            if only_finished and not finished:
                continue
            outputs.append(self._build(group, finished))
            if finished:
                del self._groups[parent_id]
                for child in group.children:
                    del self._parent_of[child.request_id]
        return outputs

    def _build(self, group: _Group, finished: bool) -> RequestOutput:
        completions = [self._completion(child) for child in group.children]
        errors = [child.error for child in group.children if child.error]
        first = group.children[0]
        return RequestOutput(
            request_id=group.request_id,
            prompt=group.prompt,
            prompt_token_ids=first.prompt_token_ids,
            outputs=completions,
            finished=finished,
            num_cached_tokens=first.num_cached_tokens,
            error=errors[0] if errors else None,
        )

    @staticmethod
    def _completion(request: Request) -> CompletionOutput:
        detokenizer = request.detokenizer
        logprobs = request.logprobs
        cumulative = None
        if logprobs is not None:
            output_ids = request.output_token_ids
            cumulative = sum(step[token].logprob for step, token in zip(logprobs, output_ids, strict=False))
            if detokenizer is not None:
                logprobs = [
                    {
                        token: Logprob(lp.logprob, lp.rank, detokenizer.decode_token(token))
                        for token, lp in step.items()
                    }
                    for step in logprobs
                ]
        completion = CompletionOutput(
            index=request.seed_offset,
            text=detokenizer.output_text if detokenizer is not None else "",
            token_ids=request.output_token_ids,
            finish_reason=request.finish_reason,
            stop_reason=request.stop_reason,
            logprobs=logprobs,
            cumulative_logprob=cumulative,
        )
        if request.grammar_spec is not None and request.is_finished:
            completion.parsed, completion.parse_error = _parse(request, completion.text)
        return completion


def _parse(request: Request, text: str) -> tuple[Any, str | None]:
    """The typed result of a finished constrained request, or (None, why not). Never a half object."""
    if request.error is not None:
        return None, request.error
    grammar = request.grammar
    if grammar is None or not grammar.is_accepting():
        if request.finish_reason == "length":
            return None, (
                f"generation stopped at max_tokens={request.sampling_params.max_tokens} before the "
                "structured output was complete; raise max_tokens"
            )
        if request.finish_reason == "abort":
            return None, "the request was aborted before the structured output was complete"
        return None, f"generation ended ({request.stop_reason!r}) before the structured output was complete"
    try:
        return request.grammar_spec.parse(text), None
    except OutputParseError as error:
        return None, str(error)
