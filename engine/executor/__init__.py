"""Executors: where the model runs. `UniProcExecutor` in the engine process, `MultiProcExecutor`
in one worker process per tensor-parallel rank. The engine builds one with `make_executor`."""

from loomlm.engine.executor.base import Executor, ExecutorError, make_executor
from loomlm.engine.executor.worker_spec import WorkerSpec

__all__ = ["Executor", "ExecutorError", "WorkerSpec", "make_executor"]
