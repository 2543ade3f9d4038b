"""Pydantic-generated schemas ($defs/$ref, Optional, Enum, Literal, list, dict, nested models, formats,
bounds, patterns) compile, accept model dumps, and every random walk parses with model_validate_json."""

from __future__ import annotations

import random
from datetime import date, datetime
from enum import Enum
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field, TypeAdapter, conint, constr

from loomlm.grammar.json_schema import SchemaOptions, schema_to_regex


class Color(Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str = Field(min_length=1, max_length=20)
    zip: constr(pattern=r"^[0-9]{5}$")


class Person(BaseModel):
    name: str
    age: conint(ge=0, le=150)
    score: float = Field(default=0.5, ge=0, le=1)
    color: Color = Color.RED
    kind: Literal["a", "b"] = "a"
    tags: list[str] = []
    counts: dict[str, int] = {}
    nickname: str | None = None
    born: date | None = None
    seen: datetime | None = None
    key: UUID | None = None
    home: Address
    others: list[Address] = []


class Tree(BaseModel):
    value: int
    children: list[Tree] = []


def _sample_valid(model, automaton, regex, seeds=30):
    rng = random.Random(7)
    for _ in range(seeds):
        model.model_validate_json(automaton.sample(regex, rng))


def test_pydantic_model_round_trip(automaton):
    schema = TypeAdapter(Person).json_schema()
    regex = schema_to_regex(schema).regex
    person = Person(
        name="Ann",
        age=30,
        score=1,
        color=Color.BLUE,
        kind="b",
        tags=["x"],
        counts={"k": 2},
        born=date(2020, 2, 29),
        seen=datetime(2024, 1, 2, 3, 4, 5),
        key=UUID(int=5),
        home=Address(street="Main", zip="12345"),
    )
    text = person.model_dump_json()
    assert automaton.matches(
        regex, text.replace('"seen":"2024-01-02T03:04:05"', '"seen":"2024-01-02T03:04:05Z"')
    )
    assert automaton.matches(
        regex, Person(name="B", age=0, home=Address(street="s", zip="00000")).model_dump_json()
    )
    assert not automaton.matches(regex, text.replace('"age":30', '"age":151'))
    assert not automaton.matches(regex, text.replace('"zip":"12345"', '"zip":"1234"'))
    _sample_valid(Person, automaton, regex)


def test_pydantic_recursive_model(automaton):
    regex = schema_to_regex(TypeAdapter(Tree).json_schema(), SchemaOptions(max_recursion_depth=2)).regex
    tree = Tree(value=1, children=[Tree(value=2, children=[Tree(value=3)])])
    assert automaton.matches(regex, tree.model_dump_json())
    _sample_valid(Tree, automaton, regex)


def test_pydantic_pretty(automaton):
    regex = schema_to_regex(TypeAdapter(Address).json_schema(), SchemaOptions(whitespace="pretty")).regex
    address = Address(street="Main", zip="12345")
    assert automaton.matches(regex, address.model_dump_json(indent=2))
    assert not automaton.matches(regex, address.model_dump_json())
