"""Typed extraction: the prompt, sampling parameters and result checks behind ``LLM.extract``.

``extract`` asks the model for a value of a type (a Pydantic model, a TypedDict, ``list[int]``...)
under that type's JSON Schema grammar and returns the validated value; anything short of a complete,
valid value raises ExtractionError carrying the output, never a half object."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter

from loomlm.engine.outputs import RequestOutput
from loomlm.engine.sampling_params import SamplingParams
from loomlm.grammar.specs import JsonSchema

Conversation = Sequence[dict[str, Any]]

_DEFAULT_INSTRUCTIONS = (
    "Extract the requested information from the user's text. Answer with one JSON object that "
    "follows this JSON Schema, using only facts stated in the text:\n{schema}"
)


class ExtractionError(ValueError):
    """The model's output is not a complete, valid value: ``output`` holds what it produced."""

    def __init__(self, message: str, output: RequestOutput | None = None) -> None:
        super().__init__(message)
        self.output = output


def extraction_messages(target: Any, source: str | Conversation, instructions: str | None) -> list[dict]:
    """The chat for one extraction: a system message with the schema, then the text (or the
    caller's own conversation, used as given)."""
    if not isinstance(source, str):
        messages = list(source)
        if not messages or not all(isinstance(m, dict) for m in messages):
            raise ValueError("extract() takes a text or a list of {'role', 'content'} messages")
        return messages
    if not source.strip():
        raise ValueError("extract() got an empty text")
    # A JSON Schema dict is the schema itself; a type (Pydantic model, dataclass, ...) describes one.
    schema = target if isinstance(target, dict) else TypeAdapter(target).json_schema()
    system = (instructions or _DEFAULT_INSTRUCTIONS).format(schema=json.dumps(schema, separators=(",", ":")))
    return [{"role": "system", "content": system}, {"role": "user", "content": source}]


def extraction_params(target: Any, params: SamplingParams | None, strict: bool) -> SamplingParams:
    """Greedy, 512 tokens by default; the response format is always the target type."""
    fmt = JsonSchema(target, strict=strict)
    if params is None:
        return SamplingParams(temperature=0.0, max_tokens=512, response_format=fmt)
    if params.n != 1:
        raise ValueError("extract() returns one value per text; use SamplingParams(n=1)")
    return params.model_copy(update={"response_format": fmt})


def extraction_result(output: RequestOutput) -> Any:
    """The parsed value of a finished extraction, or ExtractionError saying why there is none."""
    if output.error is not None:
        raise ExtractionError(f"extraction failed: {output.error}", output)
    completion = output.outputs[0]
    if completion.parse_error is not None or completion.parsed is None:
        reason = completion.parse_error or "the output did not parse"
        raise ExtractionError(f"extraction failed ({completion.finish_reason}): {reason}", output)
    return completion.parsed
