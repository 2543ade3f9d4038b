"""MultiProcExecutor: one worker process per tensor-parallel rank (torch.multiprocessing, spawn),
joined in one torch.distributed process group; the engine process keeps scheduling and sampling.

Each step the engine writes the `ModelInput` once into shared memory and sends every worker its
length; the ranks run the forward together (their collectives are torch.distributed's) and rank 0
writes the logits into shared memory. Every wait watches the workers' pipes and their process
sentinels together with a deadline, so a worker that dies, fails or hangs turns into an
`ExecutorError` at once: the executor then stops every worker (one left inside a collective with a
dead peer could never return) and refuses further work. Nothing waits forever."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import tempfile
import time
import weakref
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from typing import Any

import torch
import torch.multiprocessing as torch_mp

from loomlm.adapters.peft_loader import LoRAAdapter
from loomlm.engine.config import ParallelConfig
from loomlm.engine.executor.base import ExecutorError
from loomlm.engine.executor.shared_buffers import SharedStepBuffers
from loomlm.engine.executor.worker import worker_main
from loomlm.engine.executor.worker_spec import WorkerSpec
from loomlm.engine.outputs import ModelInput

logger = logging.getLogger(__name__)
_STOP_GRACE_S = 5.0


class MultiProcExecutor:
    def __init__(
        self, spec: WorkerSpec, parallel: ParallelConfig, *, max_num_seqs: int, vocab_size: int
    ) -> None:
        self.world_size = spec.tensor_parallel_size
        self._device = spec.rank_device(0)  # where the sampler runs: the logits go there
        self._step_timeout_s = parallel.step_timeout_s
        self._failure: str | None = None
        self._buffers = SharedStepBuffers(max_num_seqs, vocab_size)
        self._store_dir = tempfile.mkdtemp(prefix="loomlm-tp-")
        threads = parallel.worker_threads or max(1, len(os.sched_getaffinity(0)) // self.world_size)
        init_method = f"file://{self._store_dir}/store"
        context = torch_mp.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        self._finalizer = weakref.finalize(self, _stop_workers, self._procs, self._conns, self._store_dir)
        for rank in range(self.world_size):
            parent, child = context.Pipe()
            proc = context.Process(
                target=worker_main,
                args=(rank, spec, child, self._buffers, init_method, threads, parallel.step_timeout_s),
                name=f"loomlm-tp-rank{rank}",
                daemon=True,
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        started = time.perf_counter()
        self.worker_pids = self.call_all(("ready",), parallel.startup_timeout_s, send=False)
        logger.info(
            "%d tensor-parallel workers ready in %.1f s (%d torch threads each)",
            self.world_size,
            time.perf_counter() - started,
            threads,
        )
        self.lora_slots = (
            _WorkerLoRASlots(self, spec.max_loras, spec.max_lora_rank) if spec.max_loras else None
        )

    # -- the seam -------------------------------------------------------------------------------
    def execute(self, model_input: ModelInput) -> torch.Tensor:
        rows = self.call_all(("step", self._buffers.write_step(model_input)), self._step_timeout_s)[0]
        logits = self._buffers.logits_rows(rows)
        return logits if self._device.type == "cpu" else logits.to(self._device)

    def close(self) -> None:
        self._finalizer()

    @property
    def is_alive(self) -> bool:
        """No failure seen and every worker still running (a pure query: it reads the process
        sentinels without reaping, so any thread may ask, e.g. a health check)."""
        return self._failure is None and not wait([proc.sentinel for proc in self._procs], timeout=0)

    # -- talking to the workers -----------------------------------------------------------------
    def call_all(self, command: tuple, timeout_s: float, *, send: bool = True) -> list[Any]:
        """Send ``command`` to every rank and return their replies in rank order."""
        if self._failure is not None:
            raise ExecutorError(f"the tensor-parallel workers have failed: {self._failure}")
        if send:
            message = pickle.dumps(command)
            for rank, conn in enumerate(self._conns):
                try:
                    conn.send_bytes(message)
                except OSError:
                    self._fail(f"rank {rank} cannot be reached ({self._exit_note(rank)})")
        return self._collect(timeout_s, command[0])

    def _collect(self, timeout_s: float, what: str) -> list[Any]:
        replies: list[Any] = [None] * self.world_size
        pending = dict(enumerate(self._conns))
        deadline = time.monotonic() + timeout_s
        while pending:
            sentinels = {self._procs[rank].sentinel: rank for rank in pending}
            ready = wait([*pending.values(), *sentinels], timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                self._fail(f"ranks {sorted(pending)} did not answer {what!r} within {timeout_s:g} s")
            for rank, conn in list(pending.items()):
                if conn in ready or conn.poll():
                    try:
                        status, value = pickle.loads(conn.recv_bytes())
                    except (EOFError, OSError):
                        self._fail(f"rank {rank} {self._exit_note(rank)} during {what!r}")
                    if status != "ok":
                        self._fail(f"rank {rank} failed during {what!r}:\n{value}")
                    replies[rank] = value
                    del pending[rank]
            for sentinel, rank in sentinels.items():
                if sentinel in ready and rank in pending:
                    self._fail(f"rank {rank} {self._exit_note(rank)} during {what!r}")
        return replies

    def _exit_note(self, rank: int) -> str:
        proc = self._procs[rank]
        proc.join(0.5)
        code = proc.exitcode
        return (
            f"(pid {proc.pid}) exited with code {code}" if code is not None else f"(pid {proc.pid}) hung up"
        )

    def _fail(self, reason: str) -> None:
        self._failure = reason
        logger.error("tensor-parallel executor failed: %s", reason)
        for proc in self._procs:  # a rank left in a collective with a dead peer would never return
            if proc.is_alive():
                proc.kill()
        self._finalizer()
        raise ExecutorError(f"tensor-parallel worker failure: {reason}")


class _WorkerLoRASlots:
    """The registry's LoRA slots under tensor parallelism: each write goes to every worker, which
    keeps its shard of the adapter (`TPShard.shard_adapter`)."""

    def __init__(self, executor: MultiProcExecutor, num_slots: int, max_rank: int) -> None:
        self._executor = executor
        self.num_slots = num_slots
        self.max_rank = max_rank

    def write_slot(self, slot: int, adapter: LoRAAdapter) -> None:
        # A plain dict pickles (the adapter's read-only mapping view does not).
        self._executor.call_all(
            ("write_slot", slot, replace(adapter, weights=dict(adapter.weights))),
            self._executor._step_timeout_s,
        )

    def clear_slot(self, slot: int) -> None:
        self._executor.call_all(("clear_slot", slot), self._executor._step_timeout_s)


def _stop_workers(procs: list[Any], conns: list[Connection], store_dir: str) -> None:
    """Ask every worker to stop, then make sure: terminate, then kill, whatever does not exit."""
    for conn in conns:
        with contextlib.suppress(OSError):  # a worker already gone
            conn.send_bytes(pickle.dumps(("shutdown",)))
    deadline = time.monotonic() + _STOP_GRACE_S
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
            proc.join(1.0)
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)
    for conn in conns:
        conn.close()
    shutil.rmtree(store_dir, ignore_errors=True)
