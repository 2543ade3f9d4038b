"""loomlm: typed structured generation with many LoRA adapters, on a paged-KV engine."""

import logging

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
from loomlm.grammar.errors import GrammarError, InvalidRegexError, InvalidSchemaError, UnsupportedSchemaError
from loomlm.grammar.specs import Choice, Grammar, JsonObject, JsonSchema, OutputParseError, Regex
from loomlm.grammar.structural_tags import StructuralTag, StructuralTags, TaggedText, TaggedValue
from loomlm.grammar.tool_specs import ToolCall, ToolDefinitionError, ToolSpec
from loomlm.llm import LLM
from loomlm.lora import LoRARequest
from loomlm.structured import ExtractionError
from loomlm.tool_calls import ToolCallError
from loomlm.tool_runs import ToolRunResult, TypedCall
from loomlm.tool_stream import ToolCallStreamer

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
