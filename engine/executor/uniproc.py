"""UniProcExecutor: one rank, in the engine process (today's default). No copies: the runner reads
the step's arrays where the InputBuilder wrote them."""

from __future__ import annotations

import torch

from loomlm.engine.executor.worker_spec import WorkerSpec, build_runner
from loomlm.engine.outputs import ModelInput
from loomlm.engine.parallel.group import TPGroup


class UniProcExecutor:
    def __init__(self, spec: WorkerSpec) -> None:
        if spec.tensor_parallel_size != 1:
            raise ValueError("UniProcExecutor runs one rank; use MultiProcExecutor for tensor parallelism")
        self.runner = build_runner(spec, TPGroup.single())
        self.lora_slots = self.runner.lora_weights

    def execute(self, model_input: ModelInput) -> torch.Tensor:
        logits = self.runner.execute(model_input)
        if logits is None:  # rank 0 of a group of one always has them
            raise RuntimeError("the runner returned no logits on rank 0")
        return logits

    @property
    def is_alive(self) -> bool:
        return True  # it runs in this process

    def close(self) -> None:
        pass
