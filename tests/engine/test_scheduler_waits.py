"""What makes a scheduled request wait without holding up the queue: a grammar still compiling (or
failed), and an adapter slot, taken only once the request's KV blocks are secured."""

from scheduler_support import make_request, run_step, scheduled

from loomlm.engine.config import SchedulerConfig
from loomlm.engine.kv_cache_manager import KVCacheManager
from loomlm.engine.outputs import SamplerOutput
from loomlm.engine.request import Request, RequestStatus
from loomlm.engine.scheduler import Scheduler
from loomlm.engine.structured_output import GrammarStatus


class GrammarReadiness:
    """The scheduler's view of the grammar seam: per request, ready / still compiling / failed
    (True / False / the error message)."""

    def __init__(self, states: dict[str, bool | str]) -> None:
        self.states = states

    def activate(self, request: Request) -> GrammarStatus:
        state = self.states.get(request.request_id, True)
        if isinstance(state, str):
            return GrammarStatus.FAILED
        return GrammarStatus.READY if state else GrammarStatus.COMPILING

    def compile_error(self, request: Request) -> str:
        return self.states[request.request_id]

    def advance(self, request: Request, token_id: int) -> bool:
        return True


def test_a_request_whose_grammar_is_compiling_waits_without_blocking_the_queue():
    readiness = GrammarReadiness({"first": False})
    scheduler = Scheduler(
        SchedulerConfig(max_model_len=256), KVCacheManager(64, 4), structured_output=readiness
    )
    first, second = make_request("first", 8, index=0), make_request("second", 8, index=1)
    scheduler.add_request(first)
    scheduler.add_request(second)
    assert scheduled(run_step(scheduler)) == {"second": 8}
    assert first.status == RequestStatus.WAITING
    readiness.states["first"] = True
    assert scheduled(run_step(scheduler)) == {"second": 1, "first": 8}


def test_a_request_whose_grammar_failed_finishes_with_the_error_and_others_run():
    scheduler = Scheduler(
        SchedulerConfig(max_model_len=256),
        KVCacheManager(64, 4),
        structured_output=GrammarReadiness({"bad": "the regex does not parse"}),
    )
    bad, good = make_request("bad", 8, index=0), make_request("good", 8, index=1)
    scheduler.add_request(bad)
    scheduler.add_request(good)
    step = scheduler.schedule()
    assert scheduled(step) == {"good": 8}
    assert bad.status == RequestStatus.FINISHED_ERROR and bad.error == "the regex does not parse"
    assert step.failed == [bad]  # it leaves through the step's contract, with no token
    updated = scheduler.update(step, SamplerOutput([7]))
    assert updated == [bad, good] and bad.output_token_ids == []


class SlotRegistry:
    """The scheduler's view of the adapter seam, with every call recorded."""

    def __init__(self, free_slots: int) -> None:
        self.free_slots, self.calls = free_slots, []

    def slot_available(self, ref) -> bool:
        return self.free_slots > 0

    def adapter(self, ref):
        self.calls.append("read")
        return "weights"

    def acquire_slot(self, ref, adapter):
        self.calls.append("acquire")
        self.free_slots -= 1
        return 0

    def release_slot(self, slot: int) -> None:
        self.calls.append("release")
        self.free_slots += 1


def test_an_adapter_slot_is_taken_only_once_the_kv_blocks_are_secured():
    from loomlm.adapters.registry import AdapterRef

    registry = SlotRegistry(free_slots=1)
    scheduler = Scheduler(
        SchedulerConfig(max_model_len=256), KVCacheManager(num_blocks=2, block_size=4), adapters=registry
    )
    big = make_request("big", 12, index=0)  # needs 3 blocks: the pool has 2
    big.adapter = AdapterRef("a", 1, "hash", "/a")
    scheduler.add_request(big)
    assert scheduler.schedule().is_empty
    assert "acquire" not in registry.calls and registry.free_slots == 1 and big.adapter_slot is None
