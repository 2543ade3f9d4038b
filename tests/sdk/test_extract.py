"""LLM.extract with the real SmolLM2: simple sentences give correct, validated Person objects; a
generation cut off by max_tokens raises ExtractionError instead of returning a partial object."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from loomlm import LLM, ExtractionError, SamplingParams

pytestmark = pytest.mark.slow  # the real SmolLM2-135M, end to end


class Person(BaseModel):
    name: str = Field(max_length=40)
    age: int = Field(ge=0, le=130)
    city: str = Field(max_length=40)


@pytest.fixture(scope="module")
def llm(smollm2_dir):
    return LLM(str(smollm2_dir), max_num_seqs=8)


CASES = [
    ("John Smith is 42 years old and lives in Boston.", Person(name="John Smith", age=42, city="Boston")),
    ("Maria Garcia, 29, works as a nurse in Madrid.", Person(name="Maria Garcia", age=29, city="Madrid")),
    ("Anna Lee is 31 years old and lives in Paris.", Person(name="Anna Lee", age=31, city="Paris")),
]


def test_extract_returns_a_correct_person(llm):
    text, expected = CASES[0]
    person = llm.extract(Person, text)
    assert isinstance(person, Person)
    assert person == expected


def test_extract_batch_returns_one_validated_person_per_text(llm):
    people = llm.extract_batch(Person, [text for text, _ in CASES])
    assert people == [expected for _, expected in CASES]


def test_extract_stopped_by_max_tokens_raises_instead_of_a_partial_object(llm):
    with pytest.raises(ExtractionError, match="max_tokens=5") as caught:
        llm.extract(Person, CASES[0][0], sampling_params=SamplingParams(temperature=0, max_tokens=5))
    assert caught.value.output.outputs[0].finish_reason == "length"
    assert caught.value.output.outputs[0].parsed is None


def test_extract_batch_can_return_failures_in_place(llm):
    results = llm.extract_batch(
        Person,
        [CASES[0][0], CASES[1][0]],
        sampling_params=SamplingParams(temperature=0, max_tokens=6),
        return_exceptions=True,
    )
    assert all(isinstance(r, ExtractionError) for r in results)
