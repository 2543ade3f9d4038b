"""Generate with the default model (SmolLM2-135M-Instruct): a chat reply and a batch of completions."""

from loomlm import LLM, SamplingParams


def main() -> None:
    llm = LLM()  # converts the embedded GGUF once into ~/.cache/loomlm (or $LOOMLM_CACHE)

    reply = llm.chat(
        [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
        SamplingParams(temperature=0, max_tokens=48),
    )[0]
    print("chat:", reply.outputs[0].text.strip())

    prompts = ["The three primary colors are", "A haiku about autumn:\n", "def add(a, b):"]
    params = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=40, seed=0)
    for output in llm.generate(prompts, params):
        completion = output.outputs[0]
        print(f"\n{output.prompt!r} -> ({completion.finish_reason}, {len(completion.token_ids)} tokens)")
        print(completion.text)


if __name__ == "__main__":
    main()
