"""The LoRA API of LLM: enabling, loading/unloading/listing, per-prompt adapters, LoRARequest."""

import pytest

from loomlm import LLM, AdapterError, LoRARequest, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
PROMPT = [11, 22, 33, 44, 55, 66]


@pytest.fixture(scope="module")
def llm(tiny_llama_dir, tiny_lora_adapters):
    llm = LLM(str(tiny_llama_dir), max_loras=2, max_lora_rank=16, block_size=8)
    llm.load_adapter("all8", str(tiny_lora_adapters["all8"]))
    llm.load_adapter("re16", str(tiny_lora_adapters["re16"]))
    return llm


def test_lora_is_enabled_by_any_lora_size(tiny_llama_dir):
    llm = LLM(str(tiny_llama_dir), max_num_seqs=4)
    assert llm.engine.adapters is None
    with pytest.raises(ValueError, match="LoRA is not enabled"):
        llm.load_adapter("a", "/nonexistent")
    [output] = llm.generate([PROMPT], GREEDY, adapter="a")
    assert output.error is not None and "not enabled" in output.error


def test_bad_lora_sizes_are_refused(tiny_llama_dir):
    with pytest.raises(ValueError, match="max_cpu_loras"):
        LLM(str(tiny_llama_dir), max_loras=4, max_cpu_loras=2)
    with pytest.raises(ValueError, match="max_lora_rank"):
        LLM(str(tiny_llama_dir), max_lora_rank=0)


def test_one_adapter_per_prompt_and_for_all(llm, peft_logits, tiny_llama_dir, tiny_lora_adapters):
    outputs = llm.generate([PROMPT, PROMPT, PROMPT], GREEDY, adapter=["all8", None, "re16"])
    tokens = [o.outputs[0].token_ids for o in outputs]
    assert len(set(map(tuple, tokens))) == 3  # each adapter (and the base model) answers differently
    expected = peft_logits(tiny_llama_dir, tiny_lora_adapters["all8"], PROMPT)[-1].argmax().item()
    assert tokens[0][0] == expected
    [same] = llm.generate([PROMPT], GREEDY, adapter="all8")
    assert same.outputs[0].token_ids == tokens[0]


def test_unknown_adapter_fails_only_its_prompt(llm):
    outputs = llm.generate([PROMPT, PROMPT], GREEDY, adapter=["missing", "all8"])
    assert outputs[0].error is not None and "unknown adapter 'missing'" in outputs[0].error
    assert outputs[0].outputs[0].finish_reason == "error"
    assert outputs[1].error is None and len(outputs[1].outputs[0].token_ids) == GREEDY.max_tokens


def test_adapter_list_length_must_match(llm):
    with pytest.raises(ValueError, match="2 adapters for 1 prompts"):
        llm.generate([PROMPT], GREEDY, adapter=["all8", "re16"])


def test_load_list_unload(llm, tiny_lora_adapters):
    ref = llm.load_adapter("extra", str(tiny_lora_adapters["rs4"]))
    assert ref.name == "extra" and ref.path == str(tiny_lora_adapters["rs4"])
    assert [r.name for r in llm.list_adapters()] == ["all8", "extra", "re16"]
    llm.unload_adapter("extra")
    assert [r.name for r in llm.list_adapters()] == ["all8", "re16"]
    with pytest.raises(AdapterError, match="unknown adapter 'extra'"):
        llm.unload_adapter("extra")


def test_bad_adapter_directory_raises_adapter_error(llm, tmp_path):
    with pytest.raises(AdapterError, match=r"no adapter_config\.json"):
        llm.load_adapter("empty", str(tmp_path))


def test_lora_request_loads_on_first_use(llm, tiny_lora_adapters):
    request = LoRARequest("via-request", 7, str(tiny_lora_adapters["all8"]))
    [output] = llm.generate([PROMPT], GREEDY, lora_request=request)
    assert "via-request" in [r.name for r in llm.list_adapters()]
    [by_name] = llm.generate([PROMPT], GREEDY, adapter="all8")
    assert output.outputs[0].token_ids == by_name.outputs[0].token_ids
    # A LoRARequest whose path cannot be read fails its own prompt only.
    bad = LoRARequest("broken", 8, "/nonexistent/adapter")
    outputs = llm.generate([PROMPT, PROMPT], GREEDY, lora_request=[bad, None])
    assert "no adapter_config.json" in outputs[0].error
    assert outputs[1].error is None
    llm.unload_adapter("via-request")


def test_a_lora_request_whose_path_differs_from_the_loaded_adapter_is_an_error(llm, tiny_lora_adapters):
    llm.load_adapter("named", str(tiny_lora_adapters["all8"]))
    before = llm.list_adapters()
    conflicting = LoRARequest("named", 9, str(tiny_lora_adapters["re16"]))
    outputs = llm.generate([PROMPT, PROMPT], GREEDY, lora_request=[conflicting, None])
    assert "is loaded from" in outputs[0].error and str(tiny_lora_adapters["re16"]) in outputs[0].error
    assert outputs[1].error is None
    assert llm.list_adapters() == before  # nothing was reloaded behind the caller's back
    same = LoRARequest("named", 9, str(tiny_lora_adapters["all8"]))
    assert llm.generate([PROMPT], GREEDY, lora_request=same)[0].error is None
    llm.unload_adapter("named")
