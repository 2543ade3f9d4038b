"""SharedStepBuffers: the shared memory between the engine process and its workers.

``step``: the step's pickled `ModelInput`, written once by the engine and read by every rank (a
broadcast by shared memory: the pipes carry only its length). A payload larger than the buffer
(never, for the sizes the engine is configured with) travels in the pipe message instead.
``logits``: rank 0 writes the step's logits rows here; the engine samples from a view of them,
which stays valid until the next step. Both are torch tensors in shared memory, handed to the
workers when they are spawned."""

from __future__ import annotations

import pickle

import numpy as np
import torch

from loomlm.engine.outputs import ModelInput

STEP_BYTES = 4 << 20


class SharedStepBuffers:
    def __init__(self, max_rows: int, vocab_size: int, step_bytes: int = STEP_BYTES) -> None:
        self.step = torch.zeros(step_bytes, dtype=torch.uint8).share_memory_()
        self.logits = torch.zeros(max_rows, vocab_size, dtype=torch.float32).share_memory_()

    def write_step(self, model_input: ModelInput) -> int | bytes:
        """Write the step; returns its length, or the payload itself when it does not fit."""
        payload = pickle.dumps(model_input, protocol=pickle.HIGHEST_PROTOCOL)
        if len(payload) > self.step.shape[0]:
            return payload
        self.step.numpy()[: len(payload)] = np.frombuffer(payload, dtype=np.uint8)
        return len(payload)

    def read_step(self, where: int | bytes) -> ModelInput:
        payload = where if isinstance(where, bytes) else self.step.numpy()[:where].tobytes()
        model_input = pickle.loads(payload)
        if not isinstance(model_input, ModelInput):
            raise TypeError(f"the step buffer held {type(model_input).__name__}, not a ModelInput")
        return model_input

    def write_logits(self, logits: torch.Tensor) -> int:
        rows = logits.shape[0]
        self.logits[:rows].copy_(logits)
        return rows

    def logits_rows(self, rows: int) -> torch.Tensor:
        return self.logits[:rows]
