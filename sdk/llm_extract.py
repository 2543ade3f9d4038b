"""The typed extraction methods of ``LLM`` (``extract``, ``extract_batch``), kept apart so that
llm.py stays the offline API's core; they build on ``LLM.chat`` with a JSON Schema grammar."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from loomlm.engine.sampling_params import SamplingParams
from loomlm.prompts import Conversation
from loomlm.structured import ExtractionError, extraction_messages, extraction_params, extraction_result

T = TypeVar("T")


class ExtractionAPI:
    """Mixed into ``LLM``; every method goes through ``self.chat``."""

    def extract(
        self,
        target: type[T] | Any,
        source: str | Conversation,
        *,
        instructions: str | None = None,
        sampling_params: SamplingParams | None = None,
        strict: bool = True,
        adapter: str | None = None,
    ) -> T:
        """Extract a ``target`` value (a Pydantic model class, or any type a TypeAdapter accepts)
        from a text or a conversation, under the type's JSON Schema grammar. Returns the validated
        value; raises ExtractionError (a ValueError, carrying the output) when generation stops
        before the value is complete or it fails validation, never returning a partial object."""
        return self.extract_batch(
            target,
            [source],
            instructions=instructions,
            sampling_params=sampling_params,
            strict=strict,
            adapter=adapter,
        )[0]

    def extract_batch(
        self,
        target: type[T] | Any,
        sources: Sequence[str | Conversation],
        *,
        instructions: str | None = None,
        sampling_params: SamplingParams | None = None,
        strict: bool = True,
        adapter: str | Sequence[str | None] | None = None,
        return_exceptions: bool = False,
    ) -> list[T]:
        """``extract`` for many texts in one batch. With ``return_exceptions=True`` a failed item is
        its ExtractionError in the list instead of raising the first failure."""
        params = extraction_params(target, sampling_params, strict)
        conversations = [extraction_messages(target, source, instructions) for source in sources]
        outputs = self.chat(conversations, params, adapter=adapter)
        results: list[Any] = []
        for output in outputs:
            try:
                results.append(extraction_result(output))
            except ExtractionError as error:
                if not return_exceptions:
                    raise
                results.append(error)
        return results
