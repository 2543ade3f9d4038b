"""What AsyncLLM streams yield, and the trackers that make it: each engine output is a cumulative
snapshot (the whole text so far), and a stream consumer wants what is new since the previous one.

``StreamOutput`` (``generate_stream``) wraps one ``RequestOutput`` with a ``CompletionDelta`` per
completion index: new text, new token ids and logprobs, and the finish reason on the output where
that completion finished. ``ChatStreamChunk`` (``chat_stream``) has the OpenAI chunk shape per
choice: content and tool-call deltas (through ``ToolCallStreamer``) and the finish reason, which is
``tool_calls`` when the completion called. The trackers run on the event loop, one per request."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from loomlm.engine.outputs import CompletionOutput, Logprob, RequestOutput
from loomlm.engine.sampling_params import SamplingParams
from loomlm.engine.stop_checker import stop_prefix_len
from loomlm.tool_calls import ToolSet, finish_tool_outputs
from loomlm.tool_stream import ToolCallStreamer


@dataclass(frozen=True, slots=True)
class CompletionDelta:
    """What one completion added since the previous output of its stream."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None = None
    # Set once: on the output where this completion finished (None before and after).
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class _StepOf:
    """What a stream step says of its request, read from the cumulative ``output``."""

    __slots__ = ()
    output: RequestOutput

    @property
    def request_id(self) -> str:
        return self.output.request_id

    @property
    def finished(self) -> bool:
        return self.output.finished

    @property
    def error(self) -> str | None:
        return self.output.error


@dataclass(frozen=True, slots=True)
class StreamOutput(_StepOf):
    """One step of a ``generate_stream``: the cumulative ``output`` and, per completion index, its
    ``deltas``. Joining a completion's delta texts over the stream gives its final text."""

    output: RequestOutput
    deltas: list[CompletionDelta]

    def text_delta(self, index: int = 0) -> str:
        return self.deltas[index].text


@dataclass(frozen=True, slots=True)
class ChatChoiceDelta:
    """One choice of a chat chunk. ``content`` (text outside tool calls) and ``tool_calls`` (OpenAI
    ``delta.tool_calls`` entries: index, id, type and name once per call, then argument fragments)
    merge this step's ``pieces``, the streamer's deltas in order (``{"content": ...}`` or
    ``{"tool_calls": [...]}``) for a server that keeps content and calls apart in order."""

    index: int
    content: str
    tool_calls: list[dict] = field(default_factory=list)
    pieces: list[dict] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, Logprob]] | None = None
    finish_reason: str | None = None  # set once; "tool_calls" when the completion called a tool


@dataclass(frozen=True, slots=True)
class ChatStreamChunk(_StepOf):
    """One step of a ``chat_stream``: a ``ChatChoiceDelta`` per completion index and the cumulative
    ``output`` (on the finished chunk with ``tool_calls`` parsed, their ids the streamed ones)."""

    output: RequestOutput
    choices: list[ChatChoiceDelta]


class DeltaTracker:
    """Turns one request's snapshots into ``StreamOutput``s. Like the engine's detokenizer stream, it
    holds back a text tail that may still become a stop string (the engine cuts a stop string off the
    text when it completes), so no delta ever shows text that the final text lacks."""

    def __init__(self, params: SamplingParams) -> None:
        self._stops = list(params.stop)
        self._sent_chars: dict[int, int] = {}
        self._sent_tokens: dict[int, int] = {}
        self._sent_logprobs: dict[int, int] = {}
        self._finished: set[int] = set()

    def update(self, output: RequestOutput) -> StreamOutput:
        return StreamOutput(output, [self._delta(completion) for completion in output.outputs])

    def _delta(self, completion: CompletionOutput) -> CompletionDelta:
        index = completion.index
        newly_finished = completion.finished and index not in self._finished
        if newly_finished:
            self._finished.add(index)
        sent_tokens = self._sent_tokens.get(index, 0)
        self._sent_tokens[index] = len(completion.token_ids)
        logprobs = None
        if completion.logprobs is not None:
            sent = self._sent_logprobs.get(index, 0)
            logprobs = completion.logprobs[sent:]
            self._sent_logprobs[index] = len(completion.logprobs)
        return CompletionDelta(
            index=index,
            text=self._text_delta(completion),
            token_ids=completion.token_ids[sent_tokens:],
            logprobs=logprobs,
            finish_reason=completion.finish_reason if newly_finished else None,
            stop_reason=completion.stop_reason if newly_finished else None,
        )

    def _text_delta(self, completion: CompletionOutput) -> str:
        sent = self._sent_chars.get(completion.index, 0)
        text = completion.text
        end = len(text)
        if not completion.finished and self._stops:
            end -= stop_prefix_len(text, self._stops, sent)
        if end <= sent:
            return ""
        self._sent_chars[completion.index] = end
        return text[sent:end]


class ChatDeltaTracker:
    """``DeltaTracker`` for chat: with tools, each completion's text deltas go through its own
    ``ToolCallStreamer`` (in the tool set's call format), and a finished completion gets its
    ``tool_calls`` parsed as ``LLM.chat`` does, under the ids the stream already sent."""

    def __init__(self, params: SamplingParams, tools: ToolSet | None) -> None:
        self._deltas = DeltaTracker(params)
        self._tools = tools
        self._streamers: dict[int, ToolCallStreamer] = {}

    def update(self, output: RequestOutput) -> ChatStreamChunk:
        # Deltas first: parsing the calls rewrites a finished completion's text. Every snapshot is a
        # fresh RequestOutput, so a completion that finished earlier (n > 1) is parsed again in each
        # later one and the final output has all its calls.
        step = self._deltas.update(output)
        if self._tools is not None:
            finish_tool_outputs(output, self._tools)
        choices = []
        for completion, delta in zip(output.outputs, step.deltas, strict=True):
            if self._tools is None:
                pieces = [{"content": delta.text}] if delta.text else []
            else:
                pieces = self._tool_pieces(completion, delta)
            choices.append(
                ChatChoiceDelta(
                    index=delta.index,
                    content="".join(piece.get("content", "") for piece in pieces),
                    tool_calls=[call for piece in pieces for call in piece.get("tool_calls", [])],
                    pieces=pieces,
                    token_ids=delta.token_ids,
                    logprobs=delta.logprobs,
                    # "tool_calls" where the parse found calls
                    finish_reason=completion.finish_reason if delta.finish_reason is not None else None,
                )
            )
        return ChatStreamChunk(output, choices)

    def _tool_pieces(self, completion: CompletionOutput, delta: CompletionDelta) -> list[dict]:
        streamer = self._streamers.get(delta.index)
        if streamer is None:
            streamer = self._streamers[delta.index] = ToolCallStreamer(self._tools.call_format)
        pieces = [piece for piece in streamer.feed(delta.text) if piece]
        if delta.finish_reason is not None:
            pieces += [piece for piece in streamer.finish() if piece]
        streamed, calls = streamer.tool_calls, completion.tool_calls or []
        if calls and len(streamed) == len(calls):  # each call keeps the id its first chunk carried
            completion.tool_calls = [replace(c, id=s.id) for c, s in zip(calls, streamed, strict=True)]
        return pieces
