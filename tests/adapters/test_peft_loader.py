"""PEFT adapter loading: scales, rank/alpha patterns, layer and regex targets, and clear refusals."""

import json
import math
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

from loomlm.adapters.errors import AdapterError
from loomlm.adapters.peft_loader import load_peft_adapter


def copy_adapter(src, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def edit_config(directory, **changes):
    path = directory / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def edit_tensors(directory, edit):
    path = directory / "adapter_model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def test_all_modules_scaled_by_alpha_over_r(tiny_lora_adapters, spec):
    path = tiny_lora_adapters["all8"]
    adapter = load_peft_adapter("all8", path, spec, max_lora_rank=16)
    raw = load_file(str(path / "adapter_model.safetensors"))
    assert len(adapter.weights) == 2 * 7
    assert set(adapter.ranks.values()) == {8}
    a, b = adapter.weights[(1, "gate_proj")]
    prefix = "base_model.model.model.layers.1.mlp.gate_proj"
    torch.testing.assert_close(a, raw[f"{prefix}.lora_A.weight"])
    torch.testing.assert_close(b, raw[f"{prefix}.lora_B.weight"] * (16 / 8))
    assert a.dtype == b.dtype == torch.float32


def test_rslora_rank_and_alpha_patterns_and_layers_to_transform(tiny_lora_adapters, spec):
    path = tiny_lora_adapters["rs4"]
    adapter = load_peft_adapter("rs4", path, spec, max_lora_rank=16)
    raw = load_file(str(path / "adapter_model.safetensors"))
    assert adapter.ranks == {(1, "q_proj"): 4, (1, "v_proj"): 2, (1, "down_proj"): 4}
    prefix = "base_model.model.model.layers.1"
    torch.testing.assert_close(
        adapter.weights[(1, "q_proj")][1],
        raw[f"{prefix}.self_attn.q_proj.lora_B.weight"] * (8 / math.sqrt(4)),
    )
    torch.testing.assert_close(
        adapter.weights[(1, "v_proj")][1],
        raw[f"{prefix}.self_attn.v_proj.lora_B.weight"] * (8 / math.sqrt(2)),
    )
    torch.testing.assert_close(
        adapter.weights[(1, "down_proj")][1],
        raw[f"{prefix}.mlp.down_proj.lora_B.weight"] * (3 / math.sqrt(4)),
    )


def test_regex_targets_from_a_bin_file(tiny_lora_adapters, spec):
    path = tiny_lora_adapters["re16"]
    assert (path / "adapter_model.bin").is_file()
    adapter = load_peft_adapter("re16", path, spec, max_lora_rank=16)
    assert {module for _, module in adapter.weights} == {"k_proj", "o_proj", "up_proj"}
    assert adapter.max_rank == 16


def test_content_hash_follows_the_bytes(tiny_lora_adapters, spec, tmp_path):
    path = tiny_lora_adapters["all8"]
    first = load_peft_adapter("x", path, spec, 16)
    same = load_peft_adapter("y", copy_adapter(path, tmp_path), spec, 16)
    assert first.content_hash == same.content_hash
    changed = copy_adapter(path, tmp_path, "changed")
    edit_tensors(changed, lambda t: t.__setitem__(next(iter(t)), next(iter(t.values())) + 1))
    assert load_peft_adapter("x", changed, spec, 16).content_hash != first.content_hash


def test_rank_above_max_lora_rank_is_refused(tiny_lora_adapters, spec):
    with pytest.raises(AdapterError, match=r"rank 16 > max_lora_rank=8"):
        load_peft_adapter("re16", tiny_lora_adapters["re16"], spec, max_lora_rank=8)


def test_wrong_shape_names_the_tensor_and_shapes(tiny_lora_adapters, spec, tmp_path):
    path = copy_adapter(tiny_lora_adapters["all8"], tmp_path)
    key = "base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"
    edit_tensors(path, lambda t: t.__setitem__(key, torch.zeros(64, 8)))
    with pytest.raises(AdapterError, match=r"k_proj\.lora_B\.weight.*\(64, 8\).*out_features=32"):
        load_peft_adapter("bad", path, spec, 16)


def test_adapter_for_another_base_model_is_refused(tiny_lora_adapters, tiny_llama_dir_untied, spec, spec_of):
    # The untied tiny model has 4 kv heads, so its k/v projections are 64 wide, not 32.
    other_spec = spec_of(tiny_llama_dir_untied)
    with pytest.raises(AdapterError, match=r"k_proj\.lora_B\.weight.*\(32, 8\).*out_features=64"):
        load_peft_adapter("bad", tiny_lora_adapters["all8"], other_spec, 16)
    narrow = replace(spec, num_layers=2, hidden_size=32, module_dims={m: (32, 32) for m in spec.module_dims})
    with pytest.raises(AdapterError, match=r"in_features=32"):
        load_peft_adapter("bad", tiny_lora_adapters["all8"], narrow, 16)


def test_layer_outside_the_base_model_is_refused(tiny_lora_adapters, spec):
    one_layer = replace(spec, num_layers=1)
    with pytest.raises(AdapterError, match=r"layer 1 but the base model has 1 layers"):
        load_peft_adapter("bad", tiny_lora_adapters["all8"], one_layer, 16)


def test_corrupt_weights_and_missing_config_name_the_path(tiny_lora_adapters, spec, tmp_path):
    corrupt = copy_adapter(tiny_lora_adapters["all8"], tmp_path, "corrupt")
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(AdapterError, match=r"cannot read .*corrupt/adapter_model\.safetensors"):
        load_peft_adapter("bad", corrupt, spec, 16)
    no_config = copy_adapter(tiny_lora_adapters["all8"], tmp_path, "noconfig")
    (no_config / "adapter_config.json").unlink()
    with pytest.raises(AdapterError, match=r"no adapter_config\.json in .*noconfig"):
        load_peft_adapter("bad", no_config, spec, 16)
    no_weights = copy_adapter(tiny_lora_adapters["all8"], tmp_path, "noweights")
    (no_weights / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError, match=r"neither adapter_model\.safetensors nor adapter_model\.bin"):
        load_peft_adapter("bad", no_weights, spec, 16)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(use_dora=True), "DoRA"),
        (dict(modules_to_save=["lm_head"]), "modules_to_save"),
        (dict(bias="lora_only"), "bias='lora_only'"),
        (dict(lora_bias=True), "lora_bias"),
        (dict(peft_type="IA3"), "not LoRA"),
    ],
)
def test_unsupported_config_features_are_refused(tiny_lora_adapters, spec, tmp_path, changes, message):
    path = copy_adapter(tiny_lora_adapters["all8"], tmp_path)
    edit_config(path, **changes)
    with pytest.raises(AdapterError, match=message):
        load_peft_adapter("bad", path, spec, 16)


@pytest.mark.parametrize(
    "key, message",
    [
        ("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", "DoRA"),
        ("base_model.model.lm_head.lora_A.weight", "lm_head"),
        ("base_model.model.model.embed_tokens.lora_embedding_A", "embedding"),
        ("base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias", "bias"),
    ],
)
def test_unsupported_tensors_are_refused_by_name(tiny_lora_adapters, spec, tmp_path, key, message):
    path = copy_adapter(tiny_lora_adapters["all8"], tmp_path)
    edit_tensors(path, lambda t: t.__setitem__(key, torch.zeros(4)))
    with pytest.raises(AdapterError, match=message):
        load_peft_adapter("bad", path, spec, 16)


def test_fan_in_fan_out_and_dropout_do_not_change_the_weights(tiny_lora_adapters, spec, tmp_path):
    path = copy_adapter(tiny_lora_adapters["all8"], tmp_path)
    edit_config(path, fan_in_fan_out=True, lora_dropout=0.3)
    plain = load_peft_adapter("a", tiny_lora_adapters["all8"], spec, 16)
    edited = load_peft_adapter("b", path, spec, 16)
    for key, (a, b) in plain.weights.items():
        torch.testing.assert_close(edited.weights[key][0], a)
        torch.testing.assert_close(edited.weights[key][1], b)
