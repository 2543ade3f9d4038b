"""``loomlm extract``: the printed value validates against the schema and equals ``LLM.extract``
with the same prompt; a schema file that is missing, not JSON or not a JSON Schema is exit code 2
before any model loads; an output cut by --max-tokens is exit code 1, never a partial object."""

from __future__ import annotations

import io
import json

import jsonschema
import pytest

from loomlm import SamplingParams
from loomlm.cli.extract import INSTRUCTIONS
from loomlm.cli.main import main

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
TEXT = "John Smith is 42 years old."


@pytest.fixture
def schema_file(tmp_path):
    path = tmp_path / "person.json"
    path.write_text(json.dumps(SCHEMA))
    return path


def test_prints_a_value_that_validates_and_equals_llm_extract(model_args, offline, schema_file, capsys):
    system = INSTRUCTIONS.replace("{schema}", json.dumps(SCHEMA, separators=(",", ":")))
    messages = [{"role": "system", "content": system}, {"role": "user", "content": TEXT}]
    expected = offline.extract(
        SCHEMA, messages, sampling_params=SamplingParams(temperature=0, max_tokens=512)
    )
    code = main(["extract", "--schema", str(schema_file), TEXT, *model_args])
    out, err = capsys.readouterr()
    assert code == 0, err
    value = json.loads(out)
    jsonschema.validate(value, SCHEMA)
    assert value == expected
    assert out.count("\n") == 1  # compact: one line


def test_text_from_stdin_and_indent(model_args, schema_file, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(TEXT + "\n"))
    assert main(["extract", "--schema", str(schema_file), "-", "--indent", "2", *model_args]) == 0
    out = capsys.readouterr().out
    jsonschema.validate(json.loads(out), SCHEMA)
    assert out.startswith("{\n  ")


def test_output_cut_by_max_tokens_is_exit_1_and_prints_nothing(model_args, schema_file, capsys):
    code = main(["extract", "--schema", str(schema_file), TEXT, "--max-tokens", "3", *model_args])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert "max_tokens" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the schema file"),
        ('{"type": ', "is not JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"type": 5}', "not a usable JSON Schema"),
        ('{"type": "object", "minProperties": -1}', "not a usable JSON Schema"),
    ],
)
def test_bad_schema_file_is_exit_2_with_a_clear_message(tmp_path, capsys, content, message, monkeypatch):
    path = tmp_path / "schema.json"
    if content is not None:
        path.write_text(content)

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load for a bad schema")

    monkeypatch.setattr("loomlm.cli.extract.load_llm", no_model)
    code = main(["extract", "--schema", str(path), TEXT])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and str(path) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_schema_is_required(capsys):
    assert main(["extract", TEXT]) == 2
    assert "--schema" in capsys.readouterr().err
