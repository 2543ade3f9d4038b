"""LoRA slot weights: packed q/k/v and gate/up windows, per-slot ranks, and the per-step update
against a per-token reference (tokens without an adapter untouched)."""

import numpy as np
import pytest
import torch

from loomlm.adapters.layers import LoRAModelWeights
from loomlm.adapters.metadata import LoRABatchMetadataBuilder
from loomlm.adapters.peft_loader import load_peft_adapter
from loomlm.adapters.spec import PACKED_GROUPS


@pytest.fixture(scope="module")
def adapters(spec, tiny_lora_adapters):
    return [load_peft_adapter(name, tiny_lora_adapters[name], spec, 16) for name in ("all8", "rs4", "re16")]


def reference_update(adapter_of_token, layer, group, x, spec):
    """Per token: the sum over the group's modules of x @ A.T @ B.T in that module's column window."""
    modules = PACKED_GROUPS[group]
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


@pytest.mark.parametrize("use_kernels", [False, True], ids=["cpu-path", "kernel-path"])
@pytest.mark.parametrize("group", list(PACKED_GROUPS))
@pytest.mark.parametrize("layer", [0, 1])
def test_step_update_matches_per_token_reference(spec, adapters, group, layer, use_kernels):
    weights = LoRAModelWeights(spec, num_slots=4, max_rank=16, max_num_tokens=32, use_kernels=use_kernels)
    slot_of = {0: 2, 1: 0, 2: 3}  # adapter index -> slot (slot 1 stays empty)
    for index, slot in slot_of.items():
        weights.write_slot(slot, adapters[index])
    # Mixed tokens: contiguous runs, a slot split over two runs, and base tokens in between.
    token_adapter = [0, 0, None, 1, 1, 1, 2, None, 0, 2, 2, None]
    token_slots = np.array([-1 if a is None else slot_of[a] for a in token_adapter], dtype=np.int32)
    meta = LoRABatchMetadataBuilder(32, 4).build(token_slots)
    in_features = spec.module_dims[PACKED_GROUPS[group][0]][0]
    torch.manual_seed(0)
    x = torch.randn(len(token_adapter), in_features)
    base = torch.randn(len(token_adapter), sum(spec.module_dims[m][1] for m in PACKED_GROUPS[group]))
    out = base.clone()
    weights.step(meta).apply(layer, group, x, out)
    expected = base + reference_update(
        [None if a is None else adapters[a] for a in token_adapter], layer, group, x, spec
    )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    base_rows = [t for t, a in enumerate(token_adapter) if a is None]
    assert torch.equal(out[base_rows], base[base_rows])


@pytest.mark.parametrize("use_kernels", [False, True], ids=["cpu-path", "kernel-path"])
def test_slot_ranks_follow_the_adapter_and_clear(spec, adapters, use_kernels):
    weights = LoRAModelWeights(spec, num_slots=2, max_rank=16, max_num_tokens=8, use_kernels=use_kernels)
    weights.write_slot(1, adapters[1])  # rs4: q r4, v r2, down r4, layer 1 only
    qkv = weights.layers[1]["qkv_proj"]
    assert [r.host[1] for r in qkv.ranks] == [4, 0, 2]
    assert [r.device[1].item() for r in qkv.ranks] == [4, 0, 2]
    assert weights.layers[0]["qkv_proj"].ranks[0].host[1] == 0
    weights.write_slot(1, adapters[2])  # overwrite: rs4's q/v must be gone
    assert [r.host[1] for r in qkv.ranks] == [0, 16, 0]
    assert torch.count_nonzero(qkv.b[0][1]) == 0 and torch.count_nonzero(qkv.b[2][1]) == 0
    weights.clear_slot(1)
    meta = LoRABatchMetadataBuilder(8, 2).build(np.array([1, 1], dtype=np.int32))
    out = torch.zeros(2, 64 + 32 + 32)
    weights.step(meta).apply(1, "qkv_proj", torch.randn(2, 64), out)
    assert torch.count_nonzero(out) == 0


def test_write_slot_refuses_out_of_range(spec, adapters):
    weights = LoRAModelWeights(spec, num_slots=1, max_rank=8, max_num_tokens=4)
    with pytest.raises(ValueError, match="slot 1 is outside"):
        weights.write_slot(1, adapters[0])
    with pytest.raises(ValueError, match="rank 16 > 8"):
        weights.write_slot(0, adapters[2])
