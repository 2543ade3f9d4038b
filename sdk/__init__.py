"""loomlm: typed structured generation with many LoRA adapters, on a paged-KV engine.

The public names load on first use (PEP 562), so ``import loomlm`` and ``loomlm --help`` stay
fast: torch and transformers load only when something that needs them is touched."""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

# name -> the module that defines it
_EXPORTS = {
    "AdapterError": "loomlm.adapters.errors",
    "AsyncLLM": "loomlm.async_llm",
    "ChatChoiceDelta": "loomlm.async_outputs",
    "ChatStreamChunk": "loomlm.async_outputs",
    "Choice": "loomlm.grammar.specs",
    "CompilerConfig": "loomlm.grammar.compiler",
    "CompletionDelta": "loomlm.async_outputs",
    "CompletionOutput": "loomlm.engine.outputs",
    "EngineStoppedError": "loomlm.async_engine_loop",
    "ExecutorError": "loomlm.engine.executor.base",
    "ExtractionError": "loomlm.structured",
    "Grammar": "loomlm.grammar.specs",
    "GrammarError": "loomlm.grammar.errors",
    "InvalidParamsError": "loomlm.common.errors",
    "InvalidPromptError": "loomlm.common.errors",
    "InvalidRegexError": "loomlm.grammar.errors",
    "InvalidSchemaError": "loomlm.grammar.errors",
    "JsonObject": "loomlm.grammar.specs",
    "JsonSchema": "loomlm.grammar.specs",
    "LLM": "loomlm.llm",
    "LoRARequest": "loomlm.lora",
    "Logprob": "loomlm.engine.outputs",
    "OutputParseError": "loomlm.grammar.specs",
    "PromptTooLongError": "loomlm.common.errors",
    "QueueFullError": "loomlm.common.errors",
    "Regex": "loomlm.grammar.specs",
    "RequestError": "loomlm.common.errors",
    "RequestOutput": "loomlm.engine.outputs",
    "RequestStream": "loomlm.async_requests",
    "SamplingParams": "loomlm.engine.sampling_params",
    "StreamOutput": "loomlm.async_outputs",
    "StructuralTag": "loomlm.grammar.structural_tags",
    "StructuralTags": "loomlm.grammar.structural_tags",
    "TaggedText": "loomlm.grammar.structural_tags",
    "TaggedValue": "loomlm.grammar.structural_tags",
    "ToolCall": "loomlm.grammar.tool_specs",
    "ToolCallError": "loomlm.tool_calls",
    "ToolCallStreamer": "loomlm.tool_stream",
    "ToolDefinitionError": "loomlm.grammar.tool_specs",
    "ToolRunResult": "loomlm.tool_runs",
    "ToolSpec": "loomlm.grammar.tool_specs",
    "TypedCall": "loomlm.tool_runs",
    "UnsupportedSchemaError": "loomlm.grammar.errors",
}

__all__ = [
    "LLM",
    "AdapterError",
    "AsyncLLM",
    "ChatChoiceDelta",
    "ChatStreamChunk",
    "Choice",
    "CompilerConfig",
    "CompletionDelta",
    "CompletionOutput",
    "EngineStoppedError",
    "ExecutorError",
    "ExtractionError",
    "Grammar",
    "GrammarError",
    "InvalidParamsError",
    "InvalidPromptError",
    "InvalidRegexError",
    "InvalidSchemaError",
    "JsonObject",
    "JsonSchema",
    "LoRARequest",
    "Logprob",
    "OutputParseError",
    "PromptTooLongError",
    "QueueFullError",
    "Regex",
    "RequestError",
    "RequestOutput",
    "RequestStream",
    "SamplingParams",
    "StreamOutput",
    "StructuralTag",
    "StructuralTags",
    "TaggedText",
    "TaggedValue",
    "ToolCall",
    "ToolCallError",
    "ToolCallStreamer",
    "ToolDefinitionError",
    "ToolRunResult",
    "ToolSpec",
    "TypedCall",
    "UnsupportedSchemaError",
]
__version__ = "0.1.0"

# Quiet by default: the engine logs through standard logging (``logging.getLogger("loomlm")``), and
# an application that configures logging sees model loads, the KV budget, compile failures,
# preemptions and adapter loads and evictions.
logging.getLogger("loomlm").addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'loomlm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # type checkers and IDEs see the real names
    from loomlm.adapters.errors import AdapterError
    from loomlm.async_engine_loop import EngineStoppedError
    from loomlm.async_llm import AsyncLLM
    from loomlm.async_outputs import ChatChoiceDelta, ChatStreamChunk, CompletionDelta, StreamOutput
    from loomlm.async_requests import RequestStream
    from loomlm.common.errors import (
        InvalidParamsError,
        InvalidPromptError,
        PromptTooLongError,
        QueueFullError,
        RequestError,
    )
    from loomlm.engine.outputs import CompletionOutput, Logprob, RequestOutput
    from loomlm.engine.sampling_params import SamplingParams
    from loomlm.grammar.compiler import CompilerConfig
    from loomlm.grammar.errors import (
        GrammarError,
        InvalidRegexError,
        InvalidSchemaError,
        UnsupportedSchemaError,
    )
    from loomlm.grammar.specs import Choice, Grammar, JsonObject, JsonSchema, OutputParseError, Regex
    from loomlm.grammar.structural_tags import StructuralTag, StructuralTags, TaggedText, TaggedValue
    from loomlm.grammar.tool_specs import ToolCall, ToolDefinitionError, ToolSpec
    from loomlm.llm import LLM
    from loomlm.lora import LoRARequest
    from loomlm.structured import ExtractionError
    from loomlm.tool_calls import ToolCallError
    from loomlm.tool_runs import ToolRunResult, TypedCall
    from loomlm.tool_stream import ToolCallStreamer
