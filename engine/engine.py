"""LLMEngine: wires the stages together and runs one step at a time.

schedule -> run the model -> sample -> update (tokens, stop check, frees) -> outputs. Each stage
hands the next one of the contracts in ``outputs.py`` and nothing else."""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry
from transformers import AutoTokenizer

from loomlm.adapters.registry import AdapterRef, AdapterRegistry
from loomlm.engine.config import EngineConfig
from loomlm.engine.dtype_choice import resolve_dtype, resolve_kv_cache_dtype
from loomlm.engine.executor import WorkerSpec, make_executor
from loomlm.engine.executor.worker_spec import DTYPES
from loomlm.engine.input_builder import InputBuilder
from loomlm.engine.kv_cache_manager import KVCacheManager
from loomlm.engine.metrics import EngineMetrics
from loomlm.engine.model_files import resolve_model_dir
from loomlm.engine.models.calibration import CALIBRATION_TEXT
from loomlm.engine.models.loader import load_arch
from loomlm.engine.output_processor import OutputProcessor
from loomlm.engine.outputs import RequestOutput, SamplerOutput
from loomlm.engine.parallel.shard import TPShard
from loomlm.engine.processor import Processor
from loomlm.engine.sampler import Sampler
from loomlm.engine.sampling_params import SamplingParams
from loomlm.engine.scheduler import Scheduler
from loomlm.engine.structured_output import StructuredOutputManager

logger = logging.getLogger(__name__)

_DEFAULT_KV_CACHE_BYTES = 2 << 30
# When every waiting request waits for its grammar compile, a step blocks this long at most for one
# to finish (it returns as soon as one does), instead of spinning a core.
_COMPILE_WAIT_S = 1.0


class LLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        started = time.perf_counter()
        self.model_dir = resolve_model_dir(config.model)
        dtype_name, self.dtype_reason = resolve_dtype(
            config.dtype, config.device, config.quantization is not None
        )
        config = replace(config, dtype=dtype_name)
        kv_cache_dtype = resolve_kv_cache_dtype(
            config.cache.kv_cache_dtype, dtype_name, config.device, config.quantization
        )
        config = replace(config, cache=replace(config.cache, kv_cache_dtype=kv_cache_dtype))
        self.arch, self.hf_config = load_arch(self.model_dir)
        tp_size = config.parallel.tensor_parallel_size
        # This rank's sizes (KV heads, LoRA shapes); also checks that the model splits tp_size ways.
        local_arch = TPShard(self.arch, 0, tp_size).local_arch()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)

        model_max_len = self.arch.max_position_embeddings
        if self.arch.sliding_window:
            # Attention here is full-context; capping the length keeps it exact under a window.
            model_max_len = min(model_max_len, self.arch.sliding_window)
        sched = config.scheduler.resolved(model_max_len)
        max_model_len = sched.max_model_len
        self.config = config = replace(config, scheduler=sched)

        cache = config.cache
        # The KV budget is per rank: each holds its own KV heads of every block.
        kv_bytes_per_token = local_arch.kv_bytes_per_token(DTYPES[kv_cache_dtype])
        num_blocks = cache.num_blocks or self._num_blocks_for_budget(kv_bytes_per_token)
        self.kv_cache = KVCacheManager(num_blocks, cache.block_size, cache.enable_prefix_caching)
        lora = config.lora
        spec = WorkerSpec(
            model_dir=str(self.model_dir),
            dtype=config.dtype,
            kv_cache_dtype=kv_cache_dtype,
            device=config.device,
            num_blocks=num_blocks,
            block_size=cache.block_size,
            max_num_batched_tokens=sched.max_num_batched_tokens,
            tensor_parallel_size=tp_size,
            max_loras=lora.max_loras if lora.enable else 0,
            max_lora_rank=lora.max_lora_rank if lora.enable else 0,
            lora_dtype=lora.lora_dtype,
            quantization=config.quantization,
            # At most one context of the model: positions past it have no rotary entry.
            calibration_ids=tuple(self.tokenizer(CALIBRATION_TEXT)["input_ids"][:max_model_len])
            if config.quantization == "int8"
            else (),
        )
        self.executor = make_executor(
            spec, config.parallel, max_num_seqs=sched.max_num_seqs, vocab_size=self.arch.vocab_size
        )
        logger.info(
            "loaded %s (%s, %d layers, %s (%s)%s on %s, %s executor, tensor parallel %d) in %.1f s",
            self.model_dir,
            self.arch.model_type,
            self.arch.num_layers,
            config.dtype,
            self.dtype_reason,
            f", {config.quantization} linear layers" if config.quantization else "",
            config.device,
            config.parallel.backend,
            tp_size,
            time.perf_counter() - started,
        )
        logger.info(
            "KV cache: %d blocks of %d tokens (%d tokens, %.1f MiB per rank, %s); max_model_len %d, "
            "prefix caching %s",
            num_blocks,
            cache.block_size,
            num_blocks * cache.block_size,
            num_blocks * cache.block_size * kv_bytes_per_token / 2**20,
            kv_cache_dtype,
            max_model_len,
            "on" if cache.enable_prefix_caching else "off",
        )
        # Prometheus metrics in this engine's own registry; built first: grammar compiles report into it.
        self.metrics = EngineMetrics(str(config.model or self.model_dir.name), max_model_len)
        self.structured_output = StructuredOutputManager(
            self.tokenizer,
            vocab_size=self.arch.vocab_size,
            max_num_seqs=sched.max_num_seqs,
            device=config.device,
            config=config.grammar,
            backend=config.grammar_backend,
            on_compile=self.metrics.grammar_compile_seconds.observe,
        )
        self.adapters = self._build_registry() if lora.enable else None
        self.scheduler = Scheduler(
            sched, self.kv_cache, self.structured_output, self.adapters, jump_forward=config.jump_forward
        )
        self.metrics.attach(self.scheduler, self.kv_cache, self.structured_output, self.adapters)
        self.input_builder = InputBuilder(
            block_size=cache.block_size,
            max_num_seqs=sched.max_num_seqs,
            max_num_batched_tokens=sched.max_num_batched_tokens,
            max_model_len=max_model_len,
        )
        self.sampler = Sampler(self.arch.vocab_size, sched.max_num_seqs, config.device, config.seed)
        self.processor = Processor(
            self.tokenizer,
            vocab_size=self.arch.vocab_size,
            max_model_len=max_model_len,
            max_kv_tokens=num_blocks * cache.block_size,
            structured_output=self.structured_output,
            adapters=self.adapters,
        )
        self.output_processor = OutputProcessor()
        self._request_counter = itertools.count()

    def _num_blocks_for_budget(self, kv_bytes_per_token: int) -> int:
        cache, sched = self.config.cache, self.config.scheduler
        bytes_per_block = kv_bytes_per_token * cache.block_size
        budget = cache.kv_cache_bytes or _DEFAULT_KV_CACHE_BYTES
        num_blocks = budget // bytes_per_block
        if cache.kv_cache_bytes is None:
            # The default budget never exceeds what max_num_seqs full-length sequences could use.
            blocks_per_seq = -(-sched.max_model_len // cache.block_size)
            num_blocks = min(num_blocks, sched.max_num_seqs * blocks_per_seq)
        if num_blocks < 1:
            raise ValueError(f"kv_cache_bytes={budget} holds no block of {bytes_per_block} bytes; raise it")
        return int(num_blocks)

    def _build_registry(self) -> AdapterRegistry:
        """The adapter registry: it validates adapters against the whole model and writes them into
        the executor's LoRA slots (allocated once by each rank, sized by the LoRA config)."""
        lora, slots = self.config.lora, self.executor.lora_slots
        if slots is None:
            raise RuntimeError("the executor has no LoRA slots although LoRA is enabled")
        return AdapterRegistry(
            self.arch.lora_spec(),
            slots,
            max_loras=lora.max_loras,
            max_cpu_loras=lora.max_cpu_loras,
            max_lora_rank=lora.max_lora_rank,
        )

    # -- adapters -------------------------------------------------------------------------------
    def _registry(self) -> AdapterRegistry:
        if self.adapters is None:
            raise ValueError("LoRA is not enabled in this engine (EngineConfig.lora.enable)")
        return self.adapters

    def load_adapter(self, name: str, path: str) -> AdapterRef:
        """Load and validate a PEFT adapter under ``name`` (AdapterError if it does not fit)."""
        return self._registry().load(name, path)

    def unload_adapter(self, name: str) -> None:
        """New requests can no longer use ``name``; requests already queued finish with it."""
        self._registry().unload(name)

    def list_adapters(self) -> list[AdapterRef]:
        return self._registry().list() if self.adapters is not None else []

    # -- requests -------------------------------------------------------------------------------
    def add_request(
        self,
        prompt: str | list[int],
        params: SamplingParams,
        *,
        request_id: str | None = None,
        priority: int = 0,
        prompt_token_ids: list[int] | None = None,
        adapter: str | AdapterRef | None = None,
    ) -> str:
        """Queue a prompt (text or token ids), optionally under a loaded LoRA adapter. Raises a
        RequestError (AdapterError for an unknown adapter) naming the problem; nothing is queued then."""
        adapter_ref = self.processor.resolve_adapter(adapter)
        index = next(self._request_counter)
        request_id = request_id if request_id is not None else str(index)
        token_ids = self.processor.tokenize(prompt_token_ids if prompt_token_ids is not None else prompt)
        children = self.processor.make_requests(
            request_id, token_ids, params, priority=priority, arrival_index=index, adapter=adapter_ref
        )
        for child in children:
            self.scheduler.add_request(child)
        self.output_processor.add(request_id, prompt if isinstance(prompt, str) else None, children)
        return request_id

    def abort_request(self, request_ids: list[str]) -> list[RequestOutput]:
        child_ids = [cid for rid in request_ids for cid in self.output_processor.child_ids(rid)]
        aborted = self.scheduler.abort_requests(child_ids)
        self.metrics.record_finished(aborted)
        return self.output_processor.process(aborted, only_finished=True)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests()

    # -- one step -------------------------------------------------------------------------------
    def step(self, only_finished: bool = False) -> list[RequestOutput]:
        scheduler_output = self.scheduler.schedule()
        if scheduler_output.is_empty:
            sampler_output = SamplerOutput()
            if not scheduler_output.failed:
                # Nothing can run: every waiting request waits for its grammar.
                self.structured_output.wait_for_compiles(self.scheduler.waiting, _COMPILE_WAIT_S)
        else:
            requests = [chunk.request for chunk in scheduler_output.sampling_chunks]
            # With the overlap on (StructuredOutputManager.overlap_fill; off by default) the masks of
            # the rows to constrain, known before the forward, are filled on the manager's worker
            # thread while it runs (torch ops and llguidance's mask both release the GIL). Until the
            # join below the worker owns the bitmask and these grammar states; nothing here touches
            # them (the runner reads neither; the grammar advance and forced tokens come in
            # Scheduler.update, after sampling). Otherwise (or without constrained rows: no handoff)
            # the fill runs after the forward, still beside a GPU forward in flight (async launches).
            fill = self.structured_output.start_fill(requests)
            try:
                logits = self.executor.execute(self.input_builder.build(scheduler_output))
            except BaseException:
                if fill is not None:
                    fill.wait()  # the forward's error wins, but only once the worker is done
                raise
            # fill.result() joins the worker and re-raises an error of the fill here.
            token_bitmask = self.structured_output.fill_bitmask(requests) if fill is None else fill.result()
            sampler_output = self.sampler(logits, requests, token_bitmask)
        updated = self.scheduler.update(scheduler_output, sampler_output)
        self.metrics.record_step(scheduler_output, updated)
        return self.output_processor.process(updated, only_finished=only_finished)

    def stats(self) -> dict[str, Any]:
        """A plain-dict snapshot: requests running and waiting, KV usage, lifetime counters (tokens,
        finish reasons, preemptions, prefix-cache and grammar-cache queries and hits, compiles,
        adapter loads) and latency summaries. See ``EngineMetrics.snapshot``."""
        return self.metrics.snapshot()

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """This engine's Prometheus registry: serve ``prometheus_client.generate_latest(registry)``."""
        return self.metrics.registry

    def close(self) -> None:
        """Stop the grammar compile workers and the model's worker processes (also done when the
        engine is garbage-collected)."""
        self.structured_output.close()
        self.executor.close()
