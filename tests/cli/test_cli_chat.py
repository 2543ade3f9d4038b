"""``loomlm chat`` fed through a piped stdin: each line is a message, the streamed replies equal
``LLM.chat`` on the whole conversation so far, /reset forgets it, /exit and EOF end it, and a
message that cannot run is reported and skipped."""

from __future__ import annotations

import io

from loomlm import SamplingParams
from loomlm.cli.main import main

GREEDY = SamplingParams(temperature=0, max_tokens=8)
ARGS = ["--temperature", "0", "--max-tokens", "8"]
SYSTEM = "You are terse."


def reply(offline, messages: list[dict]) -> str:
    return offline.chat(messages, GREEDY)[0].outputs[0].text


def feed(monkeypatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def test_replies_stream_and_keep_the_conversation(model_args, offline, capsys, monkeypatch):
    conversation = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello!"}]
    first = reply(offline, conversation)
    conversation += [
        {"role": "assistant", "content": first},
        {"role": "user", "content": "Name three colors."},
    ]
    second = reply(offline, conversation)
    feed(monkeypatch, "Hello!\n\nName three colors.\n/exit\nnever sent\n")
    code = main(["chat", "--system", SYSTEM, *ARGS, *model_args])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == f"{first}\n{second}\n"


def test_reset_forgets_the_conversation_and_eof_ends(model_args, offline, capsys, monkeypatch):
    alone = reply(offline, [{"role": "user", "content": "Tell me a story."}])
    feed(monkeypatch, "Hi\n/reset\nTell me a story.")  # no final newline: EOF ends the last line
    assert main(["chat", *ARGS, *model_args]) == 0
    out = capsys.readouterr().out
    first = reply(offline, [{"role": "user", "content": "Hi"}])
    assert out == f"{first}\n{alone}\n"


def test_a_message_too_long_is_reported_and_the_chat_goes_on(tiny_llama_dir, offline, capsys, monkeypatch):
    feed(monkeypatch, ("word " * 100) + "\nHi\n")
    code = main(["chat", *ARGS, "--model", str(tiny_llama_dir), "--max-model-len", "64"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "loomlm chat: error:" in err and "Traceback" not in err
    assert out == reply(offline, [{"role": "user", "content": "Hi"}]) + "\n"
