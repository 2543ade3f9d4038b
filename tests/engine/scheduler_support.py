"""Schedulers and requests the scheduler tests build by hand, and one step with a hand-made sampler output."""

import zlib

from loomlm.engine.config import SchedulerConfig
from loomlm.engine.kv_cache_manager import KVCacheManager
from loomlm.engine.outputs import SamplerOutput, SchedulerOutput
from loomlm.engine.request import Request
from loomlm.engine.sampling_params import SamplingParams
from loomlm.engine.scheduler import Scheduler

EOS = 0


def make_scheduler(num_blocks=64, block_size=4, **config) -> Scheduler:
    config.setdefault("max_model_len", 256)
    return Scheduler(SchedulerConfig(**config), KVCacheManager(num_blocks, block_size))


def make_request(request_id, num_prompt=8, priority=0, index=0, **params) -> Request:
    params.setdefault("max_tokens", 4)
    # Distinct, deterministic prompts per id: no accidental prefix-cache sharing between requests.
    base = 1000 * (zlib.crc32(request_id.encode()) % 100_000)
    prompt = [base + i for i in range(num_prompt)]
    return Request(
        request_id, prompt, SamplingParams(**params), eos_token_id=EOS, priority=priority, arrival_index=index
    )


def run_step(scheduler: Scheduler, token: int = 7) -> SchedulerOutput:
    output = scheduler.schedule()
    scheduler.update(output, SamplerOutput([token] * len(output.sampling_chunks)))
    return output


def preempted_ids(output: SchedulerOutput) -> list[str]:
    return [r.request_id for r in output.preempted]


def scheduled(output: SchedulerOutput) -> dict[str, int]:
    return {c.request.request_id: c.num_tokens for c in output.chunks}
