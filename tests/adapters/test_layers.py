"""LoRA slot weights and the per-step update, on both layouts: every token's update equals a per-token
reference (tokens without an adapter untouched), whether the CPU path runs a slot alone or batches
same-layout slots; slot layouts follow the adapter and clear."""

import numpy as np
import pytest
import torch

from loomlm.adapters.cpu_layout import EMPTY_LAYOUT, SlotLayout
from loomlm.adapters.cpu_scratch import BATCH_MAX_TOKENS
from loomlm.adapters.layers import LoRAModelWeights
from loomlm.adapters.metadata import LoRABatchMetadataBuilder
from loomlm.adapters.peft_loader import load_peft_adapter
from loomlm.engine.models.arch import LlamaArch
from loomlm.kernels.native import _C

NAMES = ("all8", "rs4", "re16", "all8b")
# The tiny Llamas' fused layers, from the model's packing (the spec fixture is not there at collection).
GROUPS = [packed.name for packed in LlamaArch.packing]


@pytest.fixture(scope="module")
def adapters(spec, tiny_lora_adapters):
    return {name: load_peft_adapter(name, tiny_lora_adapters[name], spec, 16) for name in NAMES}


def reference_update(adapter_of_token, layer, group, x, spec):
    """Per token: the sum over the group's modules of x @ A.T @ B.T in that module's column window."""
    modules = spec.groups[group]
    widths = [spec.module_dims[m][1] for m in modules]
    out = torch.zeros(x.shape[0], sum(widths))
    for t, adapter in enumerate(adapter_of_token):
        if adapter is None:
            continue
        offset = 0
        for module, width in zip(modules, widths, strict=True):
            if (layer, module) in adapter.weights:
                a, b = adapter.weights[(layer, module)]
                out[t, offset : offset + width] = x[t] @ a.T @ b.T
            offset += width
    return out


def make_weights(
    spec, adapters, slot_names, *, use_kernels=False, max_num_tokens=64, cpu_native=False, int8=False
):
    weights = LoRAModelWeights(
        spec,
        num_slots=len(slot_names),
        max_rank=16,
        max_num_tokens=max_num_tokens,
        use_kernels=use_kernels,
        cpu_native=cpu_native,
        int8=int8,
    )
    for slot, name in enumerate(slot_names):
        if name is not None:
            weights.write_slot(slot, adapters[name])
    return weights


def check_step(spec, adapters, weights, slot_names, token_slots, layer, group, seed=0):
    """Apply one step's update for ``group`` and compare every row with the per-token reference."""
    meta = LoRABatchMetadataBuilder(64, len(slot_names)).build(np.array(token_slots, dtype=np.int32))
    in_features = spec.module_dims[spec.groups[group][0]][0]
    torch.manual_seed(seed)
    x = torch.randn(len(token_slots), in_features)
    base = torch.randn(len(token_slots), sum(spec.module_dims[m][1] for m in spec.groups[group]))
    out = base.clone()
    step = weights.step(meta)
    step.apply(layer, group, x, out)
    token_adapters = [None if s < 0 else adapters[slot_names[s]] for s in token_slots]
    expected = base + reference_update(token_adapters, layer, group, x, spec)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    base_rows = [t for t, s in enumerate(token_slots) if s < 0]
    assert torch.equal(out[base_rows], base[base_rows])
    return step


# Slots 0..3 hold all8, rs4, re16, all8b: four different layouts, so every slot runs alone.
DISTINCT = ("all8", "rs4", "re16", "all8b")
# all8b in two slots plus all8: three slots of one layout, so decode-sized groups batch.
SAME_LAYOUT = ("all8b", "all8", "re16", "all8b")
STEPS = {
    # contiguous runs, a slot split over two runs, base tokens in between
    "runs": (DISTINCT, [0, 0, -1, 1, 1, 1, 2, -1, 0, 2, 2, -1, 3]),
    # decode: one token per request, interleaved; counts 3/2/2 pad to 3 in the batched class
    "decode": (SAME_LAYOUT, [0, 1, 3, -1, 0, 2, 1, 3, 0, -1, 2]),
    # a prefill run too long to batch next to batched decode tokens of the same layout
    "prefill+decode": (SAME_LAYOUT, [3, *[1] * (BATCH_MAX_TOKENS + 4), 0, -1, 3, 2, 0]),
}


PATHS = {
    "cpu-path": dict(),
    "cpu-native": dict(cpu_native=True),
    "kernel-path": dict(use_kernels=True),
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("case", list(STEPS))
def test_step_update_matches_per_token_reference(spec, adapters, case, group, layer, path):
    if path == "cpu-native" and _C is None:
        pytest.skip("loomlm._C is not built")
    slot_names, token_slots = STEPS[case]
    weights = make_weights(spec, adapters, slot_names, **PATHS[path])
    step = check_step(spec, adapters, weights, slot_names, token_slots, layer, group)
    if path == "cpu-native":  # every slot went to C++, the long prefill run too
        assert all(plan.batched is None and not plan.singles for plan in step.plans.values())
        assert step.plans[group].native is not None


@pytest.mark.skipif(_C is None, reason="loomlm._C is not built")
@pytest.mark.parametrize("case", list(STEPS))
def test_int8_weights_in_cpp_equal_the_torch_path_on_their_rounded_floats(spec, adapters, case):
    slot_names, token_slots = STEPS[case]
    weights = make_weights(spec, adapters, slot_names, cpu_native=True, int8=True)
    meta = LoRABatchMetadataBuilder(64, len(slot_names)).build(np.array(token_slots, dtype=np.int32))
    token_adapters = [None if s < 0 else adapters[slot_names[s]] for s in token_slots]
    torch.manual_seed(0)
    for group in GROUPS:
        in_features = spec.module_dims[spec.groups[group][0]][0]
        for layer in (0, 1):
            x = torch.randn(len(token_slots), in_features)
            outs = []
            for native in (True, False):  # the C++ int8 copy, then torch on the float32 rows
                weights.cpu_scratch.native = native
                out = torch.zeros(len(token_slots), sum(spec.module_dims[m][1] for m in spec.groups[group]))
                outs.append(weights.step(meta).apply(layer, group, x, out))
            torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
            exact = reference_update(token_adapters, layer, group, x, spec)
            error, size = (outs[0] - exact).abs().max(), exact.abs().max()
            # Rounded (not the float weights), by a few hundredths of the update at most.
            assert (size == 0 and error == 0) or 0 < error < 0.03 * size, (group, layer, error, size)


def test_cpu_path_batches_decode_sized_groups_by_layout(spec, adapters):
    slot_names, token_slots = STEPS["prefill+decode"]
    weights = make_weights(spec, adapters, slot_names)
    step = check_step(spec, adapters, weights, slot_names, token_slots, 0, "qkv_proj")
    for group in ("qkv_proj", "o_proj"):
        plan = step.plans[group]
        # all8b's two slots form one class; all8's long run and re16 (alone in its layout) run per
        # adapter.
        assert [cls.slots.tolist() for cls in plan.batched.classes] == [[0, 3]]
        assert sorted(run.slot for run in plan.singles) == [1, 2]
    # down_proj: re16 does not target it, so it runs nowhere there.
    assert [cls.slots.tolist() for cls in step.plans["down_proj"].batched.classes] == [[0, 3]]
    assert [run.slot for run in step.plans["down_proj"].singles] == [1]


def test_cpu_batching_off_runs_every_slot_alone_with_the_same_update(spec, adapters):
    slot_names, token_slots = STEPS["decode"]
    weights = LoRAModelWeights(
        spec, num_slots=4, max_rank=16, max_num_tokens=64, cpu_batch_max_tokens=0, cpu_native=False
    )
    for slot, name in enumerate(slot_names):
        weights.write_slot(slot, adapters[name])
    step = check_step(spec, adapters, weights, slot_names, token_slots, 1, "down_proj")
    assert step.plans["down_proj"].batched is None
    assert sorted(run.slot for run in step.plans["down_proj"].singles) == [0, 1, 3]  # re16: no down_proj
    with pytest.raises(ValueError, match="batch_max_tokens must be >= 0"):
        LoRAModelWeights(spec, num_slots=1, max_rank=8, max_num_tokens=4, cpu_batch_max_tokens=-1)


def test_batched_class_without_a_module_never_adds_stale_deltas(spec, adapters):
    # Step 1 fills the k_proj delta rows with all8's batched class; in step 2 the rs4 class (no k_proj)
    # takes those rows first, and the all8 class still writes k_proj after it.
    slot_names = ("rs4", "rs4", "all8", "all8b")
    weights = make_weights(spec, adapters, slot_names)
    check_step(spec, adapters, weights, slot_names, [2, 3, 2, 3], 1, "qkv_proj", seed=1)
    step = check_step(spec, adapters, weights, slot_names, [0, 2, 1, 3, 0, 2, -1, 1], 1, "qkv_proj", seed=2)
    layouts = [
        weights.cpu_groups["qkv_proj"].layouts[cls.slots[0]] for cls in step.plans["qkv_proj"].batched.classes
    ]
    assert layouts == [SlotLayout(4, (0, 2)), SlotLayout(8, (0, 1, 2))]


def test_cpu_slot_layout_follows_the_adapter_and_clears(spec, adapters):
    weights = make_weights(spec, adapters, (None, "rs4"))
    qkv = weights.cpu_groups["qkv_proj"]
    assert qkv.layouts[1] == SlotLayout(4, (0, 2))  # q r4 and v r2 (rank_pattern) at the slot rank 4
    assert qkv.views[1][0] is None  # layers_to_transform=[1]: nothing in layer 0
    assert [(p.rank, p.out_offset) for p in qkv.views[1][1].parts] == [(4, 0), (2, 64 + 32)]
    weights.write_slot(1, adapters["re16"])  # overwrite: rs4's q/v must be gone
    assert qkv.layouts[1] == SlotLayout(16, (1,))
    assert torch.count_nonzero(qkv.rows[:, 1, qkv.row_size(qkv.layouts[1]) :]) == 0
    weights.clear_slot(1)
    assert qkv.layouts[1] == EMPTY_LAYOUT and torch.count_nonzero(qkv.rows[:, 1]) == 0
    meta = LoRABatchMetadataBuilder(8, 2).build(np.array([1, 1], dtype=np.int32))
    out = torch.zeros(2, 64 + 32 + 32)
    weights.step(meta).apply(1, "qkv_proj", torch.randn(2, 64), out)
    assert torch.count_nonzero(out) == 0


def test_kernel_slot_ranks_follow_the_adapter_and_clear(spec, adapters):
    weights = make_weights(spec, adapters, (None, "rs4"), use_kernels=True)
    qkv = weights.kernel_layers[1]["qkv_proj"]
    assert [r.host[1] for r in qkv.ranks] == [4, 0, 2]
    assert [r.device[1].item() for r in qkv.ranks] == [4, 0, 2]
    assert weights.kernel_layers[0]["qkv_proj"].ranks[0].host[1] == 0
    weights.write_slot(1, adapters["re16"])
    assert [r.host[1] for r in qkv.ranks] == [0, 16, 0]
    assert torch.count_nonzero(qkv.b[0][1]) == 0 and torch.count_nonzero(qkv.b[2][1]) == 0
    weights.clear_slot(1)
    assert all(r.host[1] == 0 for r in qkv.ranks)


def test_write_slot_refuses_out_of_range(spec, adapters):
    weights = LoRAModelWeights(spec, num_slots=1, max_rank=8, max_num_tokens=4)
    with pytest.raises(ValueError, match="slot 1 is outside"):
        weights.write_slot(1, adapters["all8"])
    with pytest.raises(ValueError, match="rank 16 > 8"):
        weights.write_slot(0, adapters["re16"])
