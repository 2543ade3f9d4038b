"""loomlm: typed structured generation with many LoRA adapters, on a paged-KV engine."""

from loomlm.engine.outputs import CompletionOutput, Logprob, RequestOutput
from loomlm.engine.processor import PromptTooLongError
from loomlm.engine.sampling_params import SamplingParams
from loomlm.llm import LLM

__all__ = ["LLM", "CompletionOutput", "Logprob", "PromptTooLongError", "RequestOutput", "SamplingParams"]
__version__ = "0.1.0"
