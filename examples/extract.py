"""Typed extraction with the default model (SmolLM2-135M-Instruct): text in, validated objects out.

The Pydantic model's JSON Schema is compiled into a token automaton, so the model can only write a
JSON object with exactly these fields and types; ``extract`` returns a ``Person``, never a string."""

from pydantic import BaseModel, Field

from loomlm import LLM, Choice, ExtractionError, Regex, SamplingParams


class Person(BaseModel):
    name: str = Field(max_length=40)
    age: int = Field(ge=0, le=130)
    city: str = Field(max_length=40)


TEXTS = [
    "John Smith is 42 years old and lives in Boston.",
    "Maria Garcia, 29, works as a nurse in Madrid.",
    "Anna Lee is 31 years old and lives in Paris.",
]


def main() -> None:
    llm = LLM()

    person = llm.extract(Person, TEXTS[0])
    print("extract:", repr(person))

    for text, result in zip(TEXTS, llm.extract_batch(Person, TEXTS, return_exceptions=True), strict=True):
        shown = repr(result) if not isinstance(result, ExtractionError) else f"failed: {result}"
        print(f"  {text!r}\n    -> {shown}")

    # The same machinery takes regexes and fixed choices.
    outputs = llm.chat(
        [
            [{"role": "user", "content": "Give me a US phone number for a pizza place."}],
            [{"role": "user", "content": "Is Paris the capital of France? Answer yes or no."}],
        ],
        [
            SamplingParams(
                temperature=0, max_tokens=20, response_format=Regex(r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}")
            ),
            SamplingParams(temperature=0, max_tokens=4, response_format=Choice(["yes", "no"])),
        ],
    )
    print("regex: ", outputs[0].outputs[0].parsed)
    print("choice:", outputs[1].outputs[0].parsed)


if __name__ == "__main__":
    main()
