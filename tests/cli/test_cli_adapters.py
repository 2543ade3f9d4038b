"""``--adapter NAME=PATH`` on generate: the adapter is loaded (LoRA switched on) and the output
equals ``LLM.generate`` with that adapter, not the base model's; an adapter directory that is not
one is exit code 2."""

from __future__ import annotations

from loomlm import LLM, SamplingParams
from loomlm.cli.main import main

PROMPT = "The capital of France is"


def test_generate_with_an_adapter_equals_llm_with_it(
    tiny_llama_dir, tiny_lora_adapters, model_args, engine_kwargs, capsys
):
    path = str(tiny_lora_adapters["all8"])
    llm = LLM(str(tiny_llama_dir), enable_lora=True, **engine_kwargs)
    try:
        llm.load_adapter("all8", path)
        params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
        with_adapter, base = llm.generate([PROMPT, PROMPT], params, adapter=["all8", None])
    finally:
        llm.engine.close()
    assert with_adapter.outputs[0].token_ids != base.outputs[0].token_ids
    argv = ["generate", PROMPT, "--adapter", f"all8={path}", "--temperature", "0", "--max-tokens", "8"]
    assert main([*argv, "--ignore-eos", *model_args]) == 0
    assert capsys.readouterr().out == with_adapter.outputs[0].text + "\n"


def test_an_adapter_that_is_not_one_is_exit_2(model_args, tmp_path, capsys):
    assert main(["generate", "x", "--adapter", f"bad={tmp_path}", *model_args]) == 2
    err = capsys.readouterr().err
    assert "adapter 'bad'" in err and "Traceback" not in err
