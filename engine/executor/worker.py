"""The worker process of one tensor-parallel rank: joins the torch.distributed group, builds its
runner (its shard of the model, KV cache and LoRA slots), then serves the engine's commands from its
pipe until told to stop or the engine process goes away.

Commands (pickled tuples): ("step", length | payload), ("write_slot", slot, adapter),
("clear_slot", slot), ("shutdown",). Each gets one reply: ("ok", value) or ("error", traceback).
Rank 0 answers a step with the number of logits rows it wrote into shared memory."""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
import traceback
from multiprocessing.connection import Connection
from typing import Any

import torch
import torch.distributed as dist

from loomlm.engine.executor.shared_buffers import SharedStepBuffers
from loomlm.engine.executor.worker_spec import WorkerSpec, build_runner
from loomlm.engine.model_runner import ModelRunner
from loomlm.engine.parallel.group import TPGroup
from loomlm.engine.parallel.shard import TPShard


def worker_main(
    rank: int,
    spec: WorkerSpec,
    conn: Connection,
    buffers: SharedStepBuffers,
    init_method: str,
    num_threads: int,
    timeout_s: float,
) -> None:
    try:
        torch.set_num_threads(num_threads)
        device = spec.rank_device(rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            init_method=init_method,
            rank=rank,
            world_size=spec.tensor_parallel_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
        tp = TPGroup(rank, spec.tensor_parallel_size, dist.group.WORLD)
        runner = build_runner(spec, tp)
        shard = TPShard(runner.model.arch, rank, spec.tensor_parallel_size)
    except BaseException:
        _reply(conn, ("error", traceback.format_exc()))
        return
    _reply(conn, ("ok", os.getpid()))
    try:
        _serve(conn, runner, shard, buffers)
    finally:
        dist.destroy_process_group()


def _serve(conn: Connection, runner: ModelRunner, shard: TPShard, buffers: SharedStepBuffers) -> None:
    while True:
        try:
            command = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return  # the engine process is gone: nothing left to serve
        kind = command[0]
        if kind == "shutdown":
            _reply(conn, ("ok", None))
            return
        try:
            _reply(conn, ("ok", _run(command, runner, shard, buffers)))
        except BaseException:
            _reply(conn, ("error", traceback.format_exc()))


def _run(command: tuple, runner: ModelRunner, shard: TPShard, buffers: SharedStepBuffers) -> Any:
    kind = command[0]
    if kind == "step":
        logits = runner.execute(buffers.read_step(command[1]))
        return 0 if logits is None else buffers.write_logits(logits)
    if runner.lora_weights is None:
        raise ValueError(f"{kind}: this engine has no LoRA slots")
    if kind == "write_slot":
        runner.lora_weights.write_slot(command[1], shard.shard_adapter(command[2]))
        return None
    if kind == "clear_slot":
        runner.lora_weights.clear_slot(command[1])
        return None
    raise ValueError(f"unknown worker command {kind!r}")


def _reply(conn: Connection, message: tuple) -> None:
    with contextlib.suppress(OSError):  # the engine process is gone
        conn.send_bytes(pickle.dumps(message))
