"""LLM: the offline API. Batches of prompts in, outputs in input order back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from loomlm import tool_calls as tc
from loomlm.adapters.registry import AdapterRef
from loomlm.common.errors import RequestError
from loomlm.common.paths import grammar_cache_dir
from loomlm.engine.config import (
    CacheConfig,
    EngineConfig,
    ExecutorBackend,
    LoRAConfig,
    ParallelConfig,
    SchedulerConfig,
    SchedulingPolicy,
)
from loomlm.engine.engine import LLMEngine
from loomlm.engine.outputs import RequestOutput
from loomlm.engine.sampling_params import SamplingParams
from loomlm.grammar.compiler import CompilerConfig
from loomlm.llm_extract import ExtractionAPI
from loomlm.llm_tools import ToolCallsAPI
from loomlm.lora import AdapterChoice, LoRARequest, per_prompt_adapters, resolve_adapter_choice
from loomlm.prompts import Conversation, PromptInput, as_params_list, as_prompt_list, error_output

# Batches at least this large show a progress bar by default.
_PROGRESS_BAR_MIN_PROMPTS = 8


class LLM(ExtractionAPI, ToolCallsAPI):
    """A model loaded for offline generation.

    ``LLM()`` serves the embedded default SmolLM2-135M-Instruct; ``LLM("/path/to/hf-dir")`` any
    local Llama-family checkpoint (Llama, Mistral, Qwen2)."""

    def __init__(
        self,
        model: str | None = None,
        *,
        max_num_seqs: int = 128,
        max_num_batched_tokens: int = 2048,
        max_model_len: int | None = None,
        enable_chunked_prefill: bool = True,
        scheduling_policy: SchedulingPolicy = "fcfs",
        block_size: int = 16,
        num_kv_blocks: int | None = None,
        kv_cache_bytes: int | None = None,
        enable_prefix_caching: bool = True,
        kv_cache_dtype: str = "auto",
        device: str = "cpu",
        dtype: str = "float32",
        quantization: str | None = None,
        seed: int | None = None,
        enable_lora: bool | None = None,
        max_loras: int | None = None,
        max_lora_rank: int | None = None,
        max_cpu_loras: int | None = None,
        lora_dtype: str = "auto",
        grammar: CompilerConfig | None = None,
        grammar_backend: str = "auto",
        jump_forward: bool = True,
        tensor_parallel_size: int = 1,
        distributed_executor_backend: ExecutorBackend | None = None,
    ) -> None:
        """LoRA serving is on when ``enable_lora`` is True, or when any of ``max_loras`` (adapters in
        one step), ``max_lora_rank`` or ``max_cpu_loras`` (adapters kept in memory) is given.
        ``grammar_backend`` picks what enforces response formats: "auto" (llguidance, falling back
        to outlines-core where llguidance refuses a spec), "llguidance" or "outlines";
        ``jump_forward`` appends tokens a grammar forces without a model step each.
        ``grammar`` sets outlines-core compilation (workers, time limit, caches); by default
        grammars are cached on disk under ``$LOOMLM_CACHE/grammars`` (``~/.cache/loomlm/grammars``).
        ``quantization="int8"``: int8 linear layers (per-channel weights, dynamic activations; CPU,
        float32); ``"int4"``: GGUF Q4_1 blocks with a Q8_0 LM head (the default model runs its
        GGUF's own blocks, as llama.cpp does); ``"q8_0"``: Q8_0 blocks; ``"bf16"``: bfloat16
        weights and GEMMs under float32 activations (CPUs with AVX-512 BF16 or AMX). Faster, at a
        small quality cost (bench/quant.py).
        ``kv_cache_dtype``: "auto" (the model's dtype; bfloat16 under ``quantization="bf16"``),
        "float32" or "bfloat16" (a float32 model on the CPU: half the cache bytes, keys and values
        rounded to bfloat16 as they are stored; bench/quant.py measures the effect).
        ``lora_dtype="int8"``: adapter weights rounded to int8 (CPU, float32; see `LoRAConfig`).
        ``tensor_parallel_size`` splits the model over that many worker processes (torch.distributed;
        ``distributed_executor_backend="mp"``, the default for more than one); a script that uses
        it must guard its entry point with ``if __name__ == "__main__":`` (workers are spawned)."""
        lora_sizes = {"max_loras": max_loras, "max_lora_rank": max_lora_rank, "max_cpu_loras": max_cpu_loras}
        given = {key: value for key, value in lora_sizes.items() if value is not None}
        enable = enable_lora if enable_lora is not None else bool(given)
        lora = LoRAConfig(enable=enable, lora_dtype=lora_dtype, **given)
        scheduler = SchedulerConfig(
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            max_model_len=max_model_len,  # None: the model's own context length
            enable_chunked_prefill=enable_chunked_prefill,
            policy=scheduling_policy,
        )
        cache = CacheConfig(
            block_size=block_size,
            num_blocks=num_kv_blocks,
            kv_cache_bytes=kv_cache_bytes,
            enable_prefix_caching=enable_prefix_caching,
            kv_cache_dtype=kv_cache_dtype,
        )
        self.engine = LLMEngine(
            EngineConfig(
                model=model,
                device=device,
                dtype=dtype,
                quantization=quantization,
                seed=seed,
                scheduler=scheduler,
                cache=cache,
                lora=lora,
                grammar=grammar or CompilerConfig(cache_dir=grammar_cache_dir()),
                grammar_backend=grammar_backend,
                jump_forward=jump_forward,
                parallel=ParallelConfig(
                    tensor_parallel_size=tensor_parallel_size,
                    distributed_executor_backend=distributed_executor_backend,
                ),
            )
        )

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    def stats(self) -> dict[str, Any]:
        """The engine's counters, gauges and latency summaries (``LLMEngine.stats``)."""
        return self.engine.stats()

    # -- adapters -------------------------------------------------------------------------------
    def load_adapter(self, name: str, path: str) -> AdapterRef:
        """Load a PEFT LoRA adapter directory under ``name`` (AdapterError if it does not fit the
        model). Loading a name again replaces it for new requests."""
        return self.engine.load_adapter(name, str(path))

    def unload_adapter(self, name: str) -> None:
        """Forget ``name``; requests already running with it finish with it."""
        self.engine.unload_adapter(name)

    def list_adapters(self) -> list[AdapterRef]:
        return self.engine.list_adapters()

    def _adapter_name(self, choice: AdapterChoice) -> str | None:
        """The adapter name a request runs with (a LoRARequest loads its adapter on first use)."""
        return resolve_adapter_choice(self.engine, choice)

    def generate(
        self,
        prompts: PromptInput | Sequence[PromptInput],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        priority: Sequence[int] | None = None,
        use_tqdm: bool | None = None,
        adapter: str | Sequence[str | None] | None = None,
        lora_request: LoRARequest | Sequence[LoRARequest | None] | None = None,
    ) -> list[RequestOutput]:
        """Generate for one prompt or a batch (strings or token-id lists). Returns one
        RequestOutput per prompt, in input order. A prompt that cannot run (too long for the
        context, bad token ids, unknown adapter) gets an output with ``error`` set and finish
        reason ``error``; the rest of the batch runs normally.

        ``adapter``: a loaded adapter's name for every prompt, or one name (or None: the base
        model) per prompt. ``lora_request``: the same with vLLM-style LoRARequests."""
        prompt_list = as_prompt_list(prompts)
        token_ids = [None] * len(prompt_list)
        if adapter is not None and lora_request is not None:
            raise ValueError("give adapter= or lora_request=, not both")
        adapters = per_prompt_adapters(adapter if adapter is not None else lora_request, len(prompt_list))
        return self._run(prompt_list, token_ids, sampling_params, priority, use_tqdm, adapters)

    def chat(
        self,
        messages: Conversation | Sequence[Conversation],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        use_tqdm: bool | None = None,
        add_generation_prompt: bool = True,
        chat_template_kwargs: dict[str, Any] | None = None,
        adapter: str | Sequence[str | None] | None = None,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = "auto",
        parallel_tool_calls: bool = True,
    ) -> list[RequestOutput]:
        """Generate replies to one conversation (a list of ``{"role", "content"}`` dicts) or a
        list of conversations, through the model's chat template (``adapter`` as in generate).

        ``tools`` (functions, Pydantic models, OpenAI dicts, ToolSpecs; or one list per
        conversation) lets the model call them: ``tool_choice`` "auto", "required", "none" or
        ``{"type": "function", "function": {"name": X}}`` (or one per conversation). Each completion
        then has ``tool_calls`` and finish reason ``tool_calls`` when it called. Malformed tools
        raise ToolDefinitionError for one conversation, or fail only theirs in a list."""
        single = bool(messages) and isinstance(messages[0], dict)
        conversations = [messages] if single else list(messages)
        processor = self.engine.processor
        adapters = per_prompt_adapters(adapter, len(conversations))
        if tools is None:
            token_ids = [
                processor.apply_chat_template(conv, add_generation_prompt, **(chat_template_kwargs or {}))
                for conv in conversations
            ]
            return self._run(list(token_ids), token_ids, sampling_params, None, use_tqdm, adapters)
        return tc.chat_with_tools(
            self, conversations, single, sampling_params, tools, tool_choice, parallel_tool_calls,
            add_generation_prompt, chat_template_kwargs or {}, use_tqdm, adapters,
        )  # fmt: skip

    def _run(
        self,
        prompts: list[PromptInput],
        prompt_token_ids: list[list[int] | None],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None,
        priority: Sequence[int] | None,
        use_tqdm: bool | None,
        adapters: list[AdapterChoice] | None = None,
        errors: dict[int, str] | None = None,
    ) -> list[RequestOutput]:
        """``errors``: prompts that fail before intake (index -> message); they run no request."""
        params_list = as_params_list(sampling_params, len(prompts))
        if priority is not None and len(priority) != len(prompts):
            raise ValueError(f"got {len(priority)} priorities for {len(prompts)} prompts")
        results: dict[str, RequestOutput] = {}
        order: list[str] = []
        for i, (prompt, params) in enumerate(zip(prompts, params_list, strict=True)):
            if errors and i in errors:
                results[f"failed-{i}"] = error_output(f"failed-{i}", prompt, params, errors[i])
                order.append(f"failed-{i}")
                continue
            try:
                request_id = self.engine.add_request(
                    prompt,
                    params,
                    priority=priority[i] if priority is not None else 0,
                    prompt_token_ids=prompt_token_ids[i],
                    adapter=self._adapter_name(adapters[i]) if adapters else None,
                )
            except RequestError as error:  # bad prompt, params, adapter or format: only this prompt fails
                request_id = f"failed-{i}"
                results[request_id] = error_output(request_id, prompt, params, str(error))
            order.append(request_id)

        show = use_tqdm if use_tqdm is not None else len(prompts) >= _PROGRESS_BAR_MIN_PROMPTS
        with tqdm(total=len(order), desc="generate", disable=not show, dynamic_ncols=True) as bar:
            bar.update(len(results))
            while self.engine.has_unfinished_requests():
                for output in self.engine.step(only_finished=True):
                    results[output.request_id] = output
                    bar.update(1)
        return [results[request_id] for request_id in order]
