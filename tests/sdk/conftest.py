"""Fixtures shared by the SDK tests: the "bigram" model of the function-calling tests."""

from __future__ import annotations

import shutil

import pytest


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
