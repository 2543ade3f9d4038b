"""loomlm: typed structured generation with many LoRA adapters, on a paged-KV engine."""

from loomlm.adapters.errors import AdapterError
from loomlm.engine.outputs import CompletionOutput, Logprob, RequestOutput
from loomlm.engine.processor import PromptTooLongError
from loomlm.engine.sampling_params import SamplingParams
from loomlm.grammar.compiler import CompilerConfig
from loomlm.grammar.errors import GrammarError, InvalidRegexError, InvalidSchemaError, UnsupportedSchemaError
from loomlm.grammar.specs import Choice, JsonObject, JsonSchema, OutputParseError, Regex
from loomlm.llm import LLM
from loomlm.lora import LoRARequest
from loomlm.structured import ExtractionError

__all__ = [
    "LLM",
    "AdapterError",
    "Choice",
    "CompilerConfig",
    "CompletionOutput",
    "ExtractionError",
    "GrammarError",
    "InvalidRegexError",
    "InvalidSchemaError",
    "JsonObject",
    "JsonSchema",
    "LoRARequest",
    "Logprob",
    "OutputParseError",
    "PromptTooLongError",
    "Regex",
    "RequestOutput",
    "SamplingParams",
    "UnsupportedSchemaError",
]
__version__ = "0.1.0"
