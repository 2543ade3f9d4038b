"""LoRABaseSpec: built by the engine with the model's packing, its lookup views, and its checks."""

from dataclasses import replace

import pytest

from loomlm.adapters.spec import PackedLinear


def test_spec_carries_the_models_packing_and_its_views(spec):
    assert spec.groups == {
        "qkv_proj": ("q_proj", "k_proj", "v_proj"),
        "o_proj": ("o_proj",),
        "gate_up_proj": ("gate_proj", "up_proj"),
        "down_proj": ("down_proj",),
    }
    assert spec.module_parents == {
        **dict.fromkeys(("q_proj", "k_proj", "v_proj", "o_proj"), "self_attn"),
        **dict.fromkeys(("gate_proj", "up_proj", "down_proj"), "mlp"),
    }


def test_spec_refuses_sizes_that_do_not_match_the_packing(spec):
    with pytest.raises(ValueError, match="module_dims covers"):
        replace(spec, module_dims={m: d for m, d in spec.module_dims.items() if m != "v_proj"})
    repeated = (*spec.packing, PackedLinear("extra", "mlp", ("up_proj",)))
    with pytest.raises(ValueError, match="repeats"):
        replace(spec, packing=repeated)
