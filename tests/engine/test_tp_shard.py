"""TPShard: how each rank's slice of the weights and of LoRA adapters is cut. Summing (row-parallel)
or concatenating (column-parallel) the ranks' partial results must give the whole layer's, which is
what the all-reduce and the gather do in the real group."""

from dataclasses import replace

import pytest
import torch
from layer_support import TINY_ARCH

from loomlm.adapters.peft_loader import LoRAAdapter
from loomlm.engine.parallel.shard import TPShard

ARCH = TINY_ARCH


def shards(world_size, arch=ARCH):
    return [TPShard(arch, rank, world_size) for rank in range(world_size)]


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_column_slices_concatenate_and_row_slices_sum_to_the_whole_layer(world_size):
    torch.manual_seed(0)
    x = torch.randn(3, ARCH.hidden_size)
    for module, (in_features, out_features) in ARCH.linear_dims().items():
        weight = torch.randn(out_features, in_features)
        x_in = torch.randn(3, in_features)
        parts = [s.slice_linear(module, weight) for s in shards(world_size)]
        if module in ("o_proj", "down_proj"):
            splits = [s.module_split(module) for s in shards(world_size)]
            partial = sum(x_in[:, sp.start : sp.end] @ p.t() for sp, p in zip(splits, parts, strict=True))
            torch.testing.assert_close(partial, x_in @ weight.t())
        elif module in ("k_proj", "v_proj") and world_size > ARCH.num_kv_heads:
            # Replicated KV heads: ranks that share a KV head hold the same rows.
            assert torch.equal(parts[0], parts[1]) and torch.equal(parts[2], parts[3])
            torch.testing.assert_close(torch.cat([parts[0], parts[2]]), weight)
        else:
            torch.testing.assert_close(torch.cat([x @ p.t() for p in parts], dim=1), x @ weight.t())


def test_kv_heads_follow_the_query_heads_that_read_them():
    # 4 query heads over 2 KV heads: query heads 0-1 read KV head 0, 2-3 read KV head 1.
    assert [s.kv_head_start for s in shards(2)] == [0, 1]
    assert [s.kv_head_start for s in shards(4)] == [0, 0, 1, 1]  # replicated past 2 ranks
    assert {s.num_kv_heads for s in shards(4)} == {1}
    local = shards(2)[1].local_arch()
    assert (local.num_heads, local.num_kv_heads, local.intermediate_size) == (2, 1, 12)


def test_vocab_rows_are_split_and_the_last_slice_zero_padded():
    weight = torch.arange(10 * 2, dtype=torch.float).view(10, 2)
    parts = [s.slice_vocab(weight) for s in shards(4)]
    assert all(p.shape == (3, 2) for p in parts)
    torch.testing.assert_close(torch.cat(parts)[:10], weight)
    assert torch.count_nonzero(torch.cat(parts)[10:]) == 0
    assert [s.vocab_start for s in shards(4)] == [0, 3, 6, 9]


def test_adapter_shards_give_the_whole_update_with_no_extra_collective():
    torch.manual_seed(1)
    dims = ARCH.linear_dims()
    weights = {(0, m): (torch.randn(3, i), torch.randn(o, 3)) for m, (i, o) in dims.items()}
    adapter = LoRAAdapter("a", "/a", "h", weights)
    for module, (in_features, _) in dims.items():
        a, b = weights[0, module]
        x = torch.randn(5, in_features)
        whole = x @ a.t() @ b.t()
        per_rank = []
        for shard in shards(2):
            a_r, b_r = shard.shard_adapter(adapter).weights[0, module]
            split = shard.module_split(module)
            x_r = x if split.splits_output else x[:, split.start : split.end]
            per_rank.append(x_r @ a_r.t() @ b_r.t())
        if module in ("o_proj", "down_proj"):  # partial sums, completed by the base layer's all-reduce
            torch.testing.assert_close(per_rank[0] + per_rank[1], whole)
        else:
            torch.testing.assert_close(torch.cat(per_rank, dim=1), whole)


@pytest.mark.parametrize(
    ("changes", "world_size", "message"),
    [
        ({}, 3, "num_attention_heads=4"),
        ({"num_heads": 6, "num_kv_heads": 3}, 2, "num_key_value_heads=3"),
        ({"intermediate_size": 18}, 4, "intermediate_size=18"),
    ],
)
def test_a_model_that_does_not_split_is_refused_with_the_reason(changes, world_size, message):
    with pytest.raises(ValueError, match=message):
        TPShard(replace(ARCH, **changes), 0, world_size)
