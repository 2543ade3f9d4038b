"""The executor seam: what the engine asks of whatever runs the model, and the error it raises when
that fails. The scheduler and the engine core never know which executor runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch

from loomlm.engine.config import ParallelConfig
from loomlm.engine.executor.worker_spec import WorkerSpec
from loomlm.engine.outputs import ModelInput

if TYPE_CHECKING:
    from loomlm.adapters.registry import LoRASlots


class ExecutorError(RuntimeError):
    """The model could not run: a worker process died, failed or did not answer in time. Every
    request in flight fails with it, and the engine refuses further steps."""


class Executor(Protocol):
    # The LoRA device slots the adapter registry writes into (None without LoRA).
    lora_slots: LoRASlots | None

    def execute(self, model_input: ModelInput) -> torch.Tensor:
        """Logits ``[num_sampling_rows, vocab]`` (float32) for the step, in sampling order."""
        ...

    @property
    def is_alive(self) -> bool:
        """Whether the model can still run (every worker up, no failure seen); a pure query."""
        ...

    def close(self) -> None:
        """Release the workers (idempotent)."""
        ...


def make_executor(
    spec: WorkerSpec, parallel: ParallelConfig, *, max_num_seqs: int, vocab_size: int
) -> Executor:
    if parallel.backend == "uni":
        from loomlm.engine.executor.uniproc import UniProcExecutor

        return UniProcExecutor(spec)
    from loomlm.engine.executor.multiproc import MultiProcExecutor

    return MultiProcExecutor(spec, parallel, max_num_seqs=max_num_seqs, vocab_size=vocab_size)
