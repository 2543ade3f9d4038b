"""Shared fixtures: the real SmolLM2 directory and tokenizer, tiny random Llamas, an HF greedy oracle."""

import os
import shutil
import sys
from pathlib import Path

import pytest

# `python -m pytest` from the repository root puts the root first on sys.path, which makes the
# package's folders importable as top-level packages too: `kernels/` (loomlm.kernels) then shadows
# Hugging Face's `kernels` package, which transformers >= 5.25 imports when it loads a model. The
# tests import loomlm only through its install; processes they start (server, CLI) inherit
# PYTHONSAFEPATH, which keeps the working directory off their path too.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT]
os.environ["PYTHONSAFEPATH"] = "1"

if os.environ.get("LOOMLM_TEST_NATIVE_TRITON") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # Triton kernels run on CPU tensors in tests

# Files that make a directory's tokenizer the real SmolLM2 one (names differ across transformers versions).
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from loomlm.engine.model_files import default_model_dir

    return default_model_dir()


@pytest.fixture(scope="session")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def _build_tiny_llama(out_dir: Path, smollm2_dir: Path, tokenizer, **overrides) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    params = dict(
        vocab_size=49152,  # the SmolLM2 vocabulary, so grammar tests see real tokens
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        # std 0.02 gives near-uniform logits and argmax ties; 0.2 makes greedy choices decisive
        # (top-1 vs top-2 logit gap >= ~1e-3 over 20-token chains, far above float32 reordering noise).
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    params.update(overrides)
    config = LlamaConfig(**params)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.save_pretrained(out_dir)
    for name in _TOKENIZER_FILES:
        if (smollm2_dir / name).is_file():
            shutil.copy(smollm2_dir / name, out_dir / name)
    return out_dir


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm2_dir, tokenizer) -> Path:
    """2-layer GQA (4 query / 2 kv heads), hidden 64, tied embeddings, random weights, SmolLM2 tokenizer."""
    return _build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), smollm2_dir, tokenizer)


@pytest.fixture(scope="session")
def tiny_llama_dir_untied(tmp_path_factory, smollm2_dir, tokenizer) -> Path:
    """3-layer MHA (4/4 heads), hidden 64, untied lm_head, random weights, SmolLM2 tokenizer."""
    return _build_tiny_llama(
        tmp_path_factory.mktemp("tiny_llama_untied"),
        smollm2_dir,
        tokenizer,
        num_hidden_layers=3,
        num_key_value_heads=4,
        tie_word_embeddings=False,
    )


@pytest.fixture(scope="session")
def hf_greedy():
    """``(model_dir, prompt_token_ids, max_new_tokens) -> new token ids``: transformers' greedy decode.

    float32, one unpadded prompt, no EOS stop (always exactly ``max_new_tokens`` tokens).
    Models are loaded once per directory for the session.
    """
    import torch
    from transformers import AutoModelForCausalLM

    models: dict[str, torch.nn.Module] = {}

    def generate(model_dir, prompt_token_ids: list[int], max_new_tokens: int) -> list[int]:
        key = str(Path(model_dir).resolve())
        if key not in models:
            model = AutoModelForCausalLM.from_pretrained(key, dtype=torch.float32).eval()
            # No EOS stop and no EOS suppression (min_new_tokens would mask EOS and change the argmax
            # chain). A None passed to generate() is refilled from model.generation_config, so clear it
            # there; this model object is private to the fixture.
            model.generation_config.eos_token_id = None
            models[key] = model
        model = models[key]
        input_ids = torch.tensor([list(prompt_token_ids)], dtype=torch.long)
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
        )
        new = out[0, input_ids.shape[1] :].tolist()
        assert len(new) == max_new_tokens, "HF stopped early; the oracle must not stop on EOS"
        return new

    return generate


# -- PEFT LoRA adapters on the tiny Llama (issue 4) ----------------------------------------------------


def make_peft_adapter(base_dir, out_dir, *, seed: int, safe_serialization: bool = True, **lora_kwargs):
    """Save a PEFT LoRA adapter for ``base_dir`` with random (non-zero) A and B into ``out_dir``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    torch.manual_seed(seed)
    # init_lora_weights=False: B is random too (PEFT's default zero B would make the adapter a no-op).
    model = get_peft_model(base, LoraConfig(init_lora_weights=False, **lora_kwargs))
    model.save_pretrained(out_dir, safe_serialization=safe_serialization)
    return Path(out_dir)


@pytest.fixture(scope="session")
def peft_adapter_factory():
    """``make_peft_adapter`` as a fixture (test modules cannot import from this conftest by name:
    another ``conftest`` module may be the one imported under that name)."""
    return make_peft_adapter


@pytest.fixture(scope="session")
def tiny_lora_adapters(tmp_path_factory, tiny_llama_dir) -> dict[str, Path]:
    """Four adapters for ``tiny_llama_dir`` that differ in rank, targets, scaling and file format:
    ``all8`` r=8 on all seven modules; ``rs4`` rsLoRA r=4 on q/v/down of layer 1 only, with a
    rank_pattern and alpha_pattern; ``re16`` r=16 from a regex target on k/o/up, saved as .bin;
    ``all8b`` like all8 (same rank and targets) with other weights and alpha."""
    root = tmp_path_factory.mktemp("tiny_lora")
    specs = {
        "all8": dict(
            r=8,
            lora_alpha=16,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ),
        "rs4": dict(
            r=4,
            lora_alpha=8,
            use_rslora=True,
            target_modules=["q_proj", "v_proj", "down_proj"],
            layers_to_transform=[1],
            rank_pattern={"v_proj": 2},
            alpha_pattern={"down_proj": 3},
        ),
        "re16": dict(r=16, lora_alpha=8, target_modules=r".*\.(k_proj|o_proj|up_proj)"),
        # Same rank and targets as all8 (so the CPU path batches them together), other values.
        "all8b": dict(
            r=8,
            lora_alpha=8,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ),
    }
    return {
        name: make_peft_adapter(
            tiny_llama_dir, root / name, seed=i + 1, safe_serialization=name != "re16", **kwargs
        )
        for i, (name, kwargs) in enumerate(specs.items())
    }


@pytest.fixture(scope="session")
def peft_logits():
    """``(base_dir, adapter_dir | None, token_ids) -> [len, vocab]`` float32 logits of PEFT's model
    with that adapter active (the plain HF model for None). Models are cached for the session."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    models: dict[tuple[str, str | None], torch.nn.Module] = {}

    def logits(base_dir, adapter_dir, token_ids: list[int]) -> torch.Tensor:
        key = (str(base_dir), None if adapter_dir is None else str(adapter_dir))
        if key not in models:
            model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
            if adapter_dir is not None:
                model = PeftModel.from_pretrained(model, adapter_dir).eval()
            models[key] = model
        with torch.no_grad():
            return models[key](input_ids=torch.tensor([token_ids])).logits[0].float()

    return logits


@pytest.fixture(scope="session")
def bigram_dir(tmp_path_factory, smollm2_dir, tokenizer):
    """A tiny Llama with the SmolLM2 tokenizer whose layers add nothing to the residual stream, so
    the next-token logits depend on the current token alone; its weights make ``<`` -> ``tool`` ->
    ``_`` -> ``call`` -> ``>`` likely and ``<`` now and then (calls happen under ``auto``)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("bigram_llama")
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    chain = tokenizer.convert_tokens_to_ids(["<", "tool", "_", "call", ">"])
    with torch.no_grad():
        for layer in model.model.layers:  # nothing added to the residual stream: logits = f(token)
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        embed.zero_()
        embed[:, 0] = 1.0  # every token: the "generic" feature (normed to 8)
        for k, token in enumerate(chain[:-1]):
            embed[token].zero_()
            embed[token, k + 1] = 1.0
        model.model.norm.weight.fill_(1.0)
        head.zero_()
        head[:, 0] = torch.randn(head.shape[0]) * 0.25  # varied text
        head[chain[0], 0] = 1.25  # '<' now and then
        head[tokenizer.convert_tokens_to_ids('"'), 0] = 1.4  # strings end
        head[tokenizer.eos_token_id, 0] = 1.2
        for k in range(len(chain) - 1):
            head[chain[k + 1], k + 1] = 3.0  # '<' -> 'tool' -> '_' -> 'call' -> '>'
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (smollm2_dir / name).is_file():
            shutil.copy(smollm2_dir / name, out / name)
    return out
