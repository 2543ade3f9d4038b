"""Scheduler without a model: admission, chunking, preemption and resumption, abort, priorities,
stop checks. Runner outputs are built by hand."""

from scheduler_support import EOS, make_request, make_scheduler, preempted_ids, run_step, scheduled

from loomlm.engine.outputs import SamplerOutput
from loomlm.engine.request import Request, RequestStatus
from loomlm.engine.sampling_params import SamplingParams


def test_admits_waiting_requests_and_then_decodes_one_token_each():
    scheduler = make_scheduler()
    a, b = make_request("a", 8, index=0), make_request("b", 5, index=1)
    scheduler.add_request(a)
    scheduler.add_request(b)
    first = run_step(scheduler)
    assert scheduled(first) == {"a": 8, "b": 5}
    assert a.num_computed_tokens == 8 and a.output_token_ids == [7]
    assert scheduled(run_step(scheduler)) == {"a": 1, "b": 1}
    assert a.status == RequestStatus.RUNNING


def test_chunked_prefill_splits_a_long_prompt_and_mixes_it_with_decodes():
    scheduler = make_scheduler(max_num_batched_tokens=10)
    short, long = make_request("short", 4, index=0), make_request("long", 20, index=1)
    scheduler.add_request(short)
    scheduler.add_request(long)
    assert scheduled(run_step(scheduler)) == {"short": 4, "long": 6}
    assert long.output_token_ids == []  # a partial prefill samples nothing
    assert scheduled(run_step(scheduler)) == {"short": 1, "long": 9}
    step = run_step(scheduler)
    assert scheduled(step) == {"short": 1, "long": 5}
    assert [c.samples for c in step.chunks] == [True, True]
    assert long.output_token_ids == [7]


def test_without_chunking_a_prompt_waits_for_a_step_with_room():
    scheduler = make_scheduler(num_blocks=128, max_num_batched_tokens=256, enable_chunked_prefill=False)
    scheduler.add_request(make_request("a", 200, index=0))
    scheduler.add_request(make_request("b", 100, index=1))
    assert scheduled(run_step(scheduler)) == {"a": 200}
    assert scheduled(run_step(scheduler)) == {"a": 1, "b": 100}


def test_max_num_seqs_caps_running_requests():
    scheduler = make_scheduler(max_num_seqs=2)
    for i in range(3):
        scheduler.add_request(make_request(f"r{i}", 4, index=i))
    assert set(scheduled(run_step(scheduler))) == {"r0", "r1"}
    assert scheduler.num_waiting == 1


def test_preemption_by_recompute_when_blocks_run_out_and_resumption():
    # 6 blocks of 4 tokens; two 8-token prompts take 4 blocks; decoding needs more.
    scheduler = make_scheduler(num_blocks=6, block_size=4)
    a = make_request("a", 8, index=0, max_tokens=16)
    b = make_request("b", 8, index=1, max_tokens=16)
    scheduler.add_request(a)
    scheduler.add_request(b)
    run_step(scheduler)  # prefill: 2 blocks each, 1 token out each (9 tokens)
    run_step(scheduler)  # decode: 3rd block each -> 6 blocks used
    for _ in range(3):
        run_step(scheduler)
    step = run_step(scheduler)  # both need a 4th block: the later arrival is preempted
    assert preempted_ids(step) == ["b"]
    assert b.status == RequestStatus.PREEMPTED and b.num_computed_tokens == 0
    assert b.num_preemptions == 1 and scheduler.kv_cache.block_ids("b") == []
    produced_before = list(b.output_token_ids)
    while not a.is_finished:
        run_step(scheduler)
    # b resumes by recomputing its prompt and generated tokens, then continues generating.
    step = run_step(scheduler)
    assert scheduled(step)["b"] == 8 + len(produced_before)
    assert b.output_token_ids[: len(produced_before)] == produced_before
    while not b.is_finished:
        run_step(scheduler)
    assert b.finish_reason == "length" and b.num_output_tokens == 16
    assert scheduler.kv_cache.num_free_blocks == 6


def test_priority_policy_admits_and_keeps_the_most_important_first():
    scheduler = make_scheduler(num_blocks=6, block_size=4, policy="priority", max_num_seqs=1)
    low = make_request("low", 4, priority=5, index=0)
    high = make_request("high", 4, priority=0, index=1)
    scheduler.add_request(low)
    scheduler.add_request(high)
    assert set(scheduled(run_step(scheduler))) == {"high"}


def test_priority_preemption_takes_the_least_important_running_request():
    scheduler = make_scheduler(num_blocks=6, block_size=4, policy="priority")
    important = make_request("important", 8, priority=0, index=1, max_tokens=16)
    casual = make_request("casual", 8, priority=9, index=0, max_tokens=16)
    scheduler.add_request(casual)
    scheduler.add_request(important)
    preempted = []
    for _ in range(6):
        preempted += preempted_ids(run_step(scheduler))
    assert preempted == ["casual"]


def test_abort_frees_blocks_and_the_next_step_schedules_only_the_others():
    scheduler = make_scheduler()
    a, b = make_request("a", 8, index=0), make_request("b", 8, index=1)
    scheduler.add_request(a)
    scheduler.add_request(b)
    run_step(scheduler)
    free_before = scheduler.kv_cache.num_free_blocks
    assert scheduler.abort_requests(["a", "missing"]) == [a]
    assert a.status == RequestStatus.FINISHED_ABORTED and a.finish_reason == "abort"
    assert scheduler.kv_cache.num_free_blocks == free_before + 2  # 8 prompt tokens in 2 blocks
    step = run_step(scheduler)
    assert scheduled(step) == {"b": 1} and "a" not in scheduler.requests


def test_abort_of_a_waiting_request_removes_it_from_the_queue():
    scheduler = make_scheduler(max_num_seqs=1)
    scheduler.add_request(make_request("a", 4, index=0))
    scheduler.add_request(make_request("b", 4, index=1))
    scheduler.abort_requests(["b"])
    assert scheduler.num_waiting == 1
    assert scheduled(run_step(scheduler)) == {"a": 4}


def test_eos_stops_unless_ignored():
    scheduler = make_scheduler()
    eos = make_request("eos", 4, index=0, max_tokens=10)
    ignore = make_request("ignore", 4, index=1, max_tokens=10, ignore_eos=True)
    scheduler.add_request(eos)
    scheduler.add_request(ignore)
    run_step(scheduler, token=EOS)
    assert eos.finish_reason == "stop" and eos.stop_reason is None and eos.num_output_tokens == 1
    assert not ignore.is_finished and ignore.output_token_ids == [EOS]


def test_stop_token_id_sets_stop_reason_and_min_tokens_delays_stopping():
    # Stops count from output token min_tokens + 1 (the sampler masks stop ids before that).
    scheduler = make_scheduler()
    stop_id = make_request("stop_id", 4, index=0, max_tokens=10, stop_token_ids=[7])
    min_tok = make_request("min", 4, index=1, max_tokens=10, min_tokens=2, stop_token_ids=[7])
    ignore = make_request("ignore", 4, index=2, max_tokens=4, ignore_eos=True)
    for request in (stop_id, min_tok, ignore):
        scheduler.add_request(request)
    run_step(scheduler, token=7)
    assert stop_id.finish_reason == "stop" and stop_id.stop_reason == 7
    run_step(scheduler, token=7)
    assert not min_tok.is_finished
    run_step(scheduler, token=7)
    assert min_tok.finish_reason == "stop" and min_tok.num_output_tokens == 3
    run_step(scheduler, token=EOS)
    assert ignore.finish_reason == "length" and ignore.output_token_ids == [7, 7, 7, EOS]


def test_max_model_len_ends_a_request_with_length():
    scheduler = make_scheduler(max_model_len=10)
    request = make_request("a", 8, index=0, max_tokens=100)
    scheduler.add_request(request)
    run_step(scheduler)
    run_step(scheduler)
    assert request.finish_reason == "length" and request.num_tokens == 10


def test_a_sequence_larger_than_the_whole_pool_fails_alone():
    scheduler = make_scheduler(num_blocks=3, block_size=4)
    greedy = make_request("big", 10, index=0, max_tokens=50)
    scheduler.add_request(greedy)
    for _ in range(5):
        run_step(scheduler)
    assert greedy.status == RequestStatus.FINISHED_ERROR and "KV cache" in greedy.error
    assert scheduler.kv_cache.num_free_blocks == 3


def test_invalid_sampled_token_fails_only_that_request():
    scheduler = make_scheduler()
    a, b = make_request("a", 4, index=0), make_request("b", 4, index=1)
    scheduler.add_request(a)
    scheduler.add_request(b)
    output = scheduler.schedule()
    scheduler.update(output, SamplerOutput([-1, 7]))
    assert a.status == RequestStatus.FINISHED_ERROR and b.output_token_ids == [7]


def test_prefix_cache_hit_skips_computed_tokens():
    scheduler = make_scheduler(block_size=4)
    first = make_request("a", 12, index=0)
    scheduler.add_request(first)
    run_step(scheduler)
    twin = Request("b", list(first.prompt_token_ids), SamplingParams(max_tokens=2), eos_token_id=EOS)
    scheduler.add_request(twin)
    step = run_step(scheduler)
    assert scheduled(step)["b"] == 4 and twin.num_cached_tokens == 8


def test_priority_abort_of_a_waiting_and_of_a_running_request():
    scheduler = make_scheduler(policy="priority", max_num_seqs=2)
    requests = {
        name: make_request(name, 4, priority=p, index=i, max_tokens=8)
        for i, (name, p) in enumerate([("bg", 9), ("urgent", 0), ("normal", 5), ("later", 7)])
    }
    for request in requests.values():
        scheduler.add_request(request)
    assert set(scheduled(run_step(scheduler))) == {"urgent", "normal"}
    free_before = scheduler.kv_cache.num_free_blocks
    # A waiting one: it leaves the queue at once; the rest keep their priority order.
    assert scheduler.abort_requests(["later"]) == [requests["later"]]
    assert [r.request_id for r in scheduler.waiting] == ["bg"] and scheduler.num_waiting == 1
    # A running one: its blocks are freed and the best-ranked waiting request takes its place.
    assert scheduler.abort_requests(["urgent"]) == [requests["urgent"]]
    assert scheduler.kv_cache.num_free_blocks == free_before + 1  # its 4 prompt tokens' block
    assert scheduled(run_step(scheduler)) == {"normal": 1, "bg": 4}
    assert requests["later"].finish_reason == requests["urgent"].finish_reason == "abort"
    while scheduler.has_unfinished_requests():
        run_step(scheduler)
    assert requests["later"].output_token_ids == [] and requests["bg"].finish_reason == "length"
    assert scheduler.num_waiting == 0 and scheduler.kv_cache.num_free_blocks == 64


def test_preempted_requests_go_back_in_front_of_the_fcfs_queue():
    scheduler = make_scheduler(num_blocks=6, block_size=4, max_num_seqs=2)
    a = make_request("a", 8, index=0, max_tokens=16)
    b = make_request("b", 8, index=1, max_tokens=16)
    c = make_request("c", 4, index=2, max_tokens=2)
    for request in (a, b, c):
        scheduler.add_request(request)
    while not b.num_preemptions:
        run_step(scheduler)
    assert [r.request_id for r in scheduler.waiting] == ["b", "c"]  # b was older than c
