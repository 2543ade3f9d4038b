import time
import torch

def test_tiny(tiny_llama_dir, tiny_llama_dir_untied, hf_greedy, tokenizer, smollm2_dir):
    from transformers import AutoConfig, AutoTokenizer, AutoModelForCausalLM
    import os
    print(os.environ.get("TRITON_INTERPRET"))
    for d in (tiny_llama_dir, tiny_llama_dir_untied):
        print(sorted(p.name for p in d.iterdir()))
        cfg = AutoConfig.from_pretrained(d); print(cfg.tie_word_embeddings, cfg.num_key_value_heads, cfg.num_hidden_layers, cfg.dtype)
        tok = AutoTokenizer.from_pretrained(d); assert tok("a 12").input_ids == [81, 216, 33, 34]
        m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
        for text in ["Hello world", "The capital of France is", "def f(x):"]:
            ids = tok(text).input_ids
            t = time.time(); out = hf_greedy(d, ids, 20); dt = time.time() - t
            logits = m(torch.tensor([ids])).logits[0, -1]
            top = logits.topk(2).values
            print(text, out, len(set(out)), "gap", float(top[0] - top[1]), "std", float(logits.std()), f"{dt:.2f}s")
        print("untied differs:", not torch.equal(m.lm_head.weight, m.model.embed_tokens.weight))
    out = hf_greedy(smollm2_dir, tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_dict=False) , 12)
    print(repr(tokenizer.decode(out)))
