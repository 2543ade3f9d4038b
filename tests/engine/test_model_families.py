"""Other Llama-family checkpoints: Qwen2 (q/k/v biases), Mistral, and Llama 3 RoPE scaling, each
greedy-identical to Hugging Face transformers; unsupported architectures are refused clearly."""

import json
import shutil

import pytest
import torch

from loomlm import LLM, SamplingParams

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
SMALL = dict(
    vocab_size=49152,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    initializer_range=0.2,
    bos_token_id=1,
    eos_token_id=2,
)


def save_random_model(directory, smollm2_dir, config):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(torch.float32).eval()
    if getattr(config, "attention_bias", False) or config.model_type == "qwen2":
        with torch.no_grad():  # random init leaves biases at 0; make them count
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.2)
    model.save_pretrained(directory)
    for name in TOKENIZER_FILES:
        shutil.copy(smollm2_dir / name, directory / name)
    return directory


def build(kind, tmp_path_factory, smollm2_dir):
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    directory = tmp_path_factory.mktemp(kind)
    if kind == "qwen2":
        config = Qwen2Config(**SMALL, tie_word_embeddings=False)
    elif kind == "mistral":
        config = MistralConfig(**SMALL, sliding_window=256)
    else:
        config = LlamaConfig(
            **SMALL,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        )
    return save_random_model(directory, smollm2_dir, config)


@pytest.mark.parametrize("kind", ["qwen2", "mistral", "llama3_rope"])
def test_family_matches_hf_greedy(kind, tmp_path_factory, smollm2_dir, hf_greedy):
    model_dir = build(kind, tmp_path_factory, smollm2_dir)
    llm = LLM(str(model_dir), block_size=8, max_num_batched_tokens=32)
    prompts = [[(7 * i + 3 * j) % 40000 + 100 for j in range(n)] for i, n in enumerate((5, 37, 90))]
    for prompt, output in zip(prompts, llm.generate(prompts, GREEDY), strict=True):
        assert output.outputs[0].token_ids == hf_greedy(model_dir, prompt, GREEDY.max_tokens)


def test_unsupported_architecture_is_refused(tmp_path, tiny_llama_dir):
    for name in ("config.json", "model.safetensors", *TOKENIZER_FILES):
        shutil.copy(tiny_llama_dir / name, tmp_path / name)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "gpt2"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="not supported"):
        LLM(str(tmp_path))
