"""A corpus of varied, realistic JSON Schemas (Pydantic models and hand-written dicts) for timing
grammar compilation. Deterministic: the same ``count`` always gives the same schemas."""

from __future__ import annotations

import random
from datetime import date, datetime
from enum import Enum
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field


class Status(Enum):
    OPEN = "open"
    CLOSED = "closed"
    PENDING = "pending"


class Address(BaseModel):
    street: str
    city: str
    postcode: str = Field(pattern=r"^[0-9]{5}$")
    country: Literal["US", "FR", "JP", "DE"]


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=130)
    email: str | None = None
    address: Address


class Invoice(BaseModel):
    id: UUID
    issued: date
    total: float = Field(ge=0)
    status: Status
    lines: list[dict[str, int]] = Field(max_length=20)


class Event(BaseModel):
    title: str = Field(max_length=80)
    starts: datetime
    attendees: list[Person] = Field(max_length=10)
    tags: list[str] = []


class Tree(BaseModel):
    label: str
    children: list[Tree] = []


def _object(rng: random.Random, index: int) -> dict:
    kinds = [
        {"type": "string", "maxLength": rng.randint(4, 64)},
        {"type": "integer", "minimum": -rng.randint(0, 1000), "maximum": rng.randint(1, 10**6)},
        {"type": "number", "minimum": 0, "exclusiveMaximum": rng.choice([1, 100, 1e6])},
        {"type": "boolean"},
        {"enum": [f"v{index}_{k}" for k in range(rng.randint(2, 12))]},
        {
            "type": "string",
            "format": rng.choice(["date", "date-time", "uuid", "email", "ipv4", "time", "uri"]),
        },
        {"type": "array", "items": {"type": "integer"}, "minItems": 0, "maxItems": rng.randint(1, 8)},
        {"anyOf": [{"type": "string", "maxLength": 16}, {"type": "null"}]},
    ]
    num_props = rng.randint(2, 10)
    props = {f"field_{index}_{k}": rng.choice(kinds) for k in range(num_props)}
    required = sorted(rng.sample(sorted(props), rng.randint(1, num_props)))
    schema = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
    if rng.random() < 0.3:
        schema = {"type": "array", "items": schema, "maxItems": rng.randint(1, 16)}
    if rng.random() < 0.2:
        schema = {
            "$defs": {"item": schema},
            "type": "object",
            "properties": {"data": {"$ref": "#/$defs/item"}},
            "required": ["data"],
        }
    return schema


def schema_corpus(count: int, seed: int = 0) -> list:
    """``count`` schemas: the Pydantic models first, then generated object/array schemas."""
    models = [Status, Address, Person, Invoice, Event, Tree, list[Person], dict[str, float]]
    corpus: list = list(models[:count])
    rng = random.Random(seed)
    while len(corpus) < count:
        corpus.append(_object(rng, len(corpus)))
    return corpus
