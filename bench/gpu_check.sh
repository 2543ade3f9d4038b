#!/usr/bin/env bash
# The GPU checks, for a lent CUDA machine that has torch, triton, transformers and peft but cannot
# reach a package index (this workplace's `device` tool). Two steps:
#
#   bench/gpu_check.sh prepare   # here: wheels for loomlm's other dependencies (Python 3.12) and the
#                                # default model's config + tokenizer into .gpu/ (git-ignored)
#   bench/gpu_check.sh run       # there, from the repository root, with .gpu carried along
#
# `run` installs the wheels, lays loomlm's package folders out under /tmp/pkg (no C++ build: the CPU
# extension is not what is checked there), and writes a SmolLM2-135M-shaped model with random weights
# (the default model's wheel is too large to carry; throughput does not depend on weight values).
# Then: the Triton kernel tests natively on the GPU, the CUDA engine tests (greedy vs HF, LoRA vs
# PEFT, bf16, JSON schema), bench/throughput.py and bench/lora.py on CUDA in bf16. Logs go to $OUT.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD

prepare() {
    mkdir -p .gpu/whl .gpu/smollm2
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
    local model
    model=$(python -c "from loomlm.engine.model_files import default_model_dir; print(default_model_dir())")
    cp "$model"/{config.json,generation_config.json,tokenizer.json,tokenizer_config.json} .gpu/smollm2/
    echo '{"format": 1}' >.gpu/smollm2/loomlm_converted.json # a stand-in, not the converted GGUF
    local platforms=() n
    for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
    # The versions this checkout is tested with; the machine's own torch/transformers/peft/triton stay.
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" --platform manylinux2014_x86_64 -d .gpu/whl \
        outlines_core==0.2.14 llguidance==1.9.1 pydantic==2.14.4 pydantic_core==2.50.5 \
        annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0 jsonschema==4.26.0 \
        jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 gguf==0.19.0 \
        fastapi==0.165.0 starlette==1.10.0 uvicorn==0.55.0 annotated-doc==0.0.7
    du -sh .gpu
}

stage() { # name, seconds, command...: run one stage under a time limit, log to $OUT/name.log
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc in $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
    tail -n 25 "$OUT/$name.log"
}

run() {
    OUT=${OUT:-/tmp/gpu_check_out}
    mkdir -p "$OUT"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .gpu/whl/*.whl || exit 1
    mkdir -p /tmp/pkg/loomlm
    local f
    for f in sdk/*.py; do ln -sf "$ROOT/$f" /tmp/pkg/loomlm/; done
    for f in engine grammar adapters kernels common server cli; do ln -sfn "$ROOT/$f" "/tmp/pkg/loomlm/$f"; done
    export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1 LOOMLM_CACHE=/tmp/loomlm_cache
    export LOOMLM_TEST_NATIVE_TRITON=1 TOKENIZERS_PARALLELISM=false
    local model=$LOOMLM_CACHE/models/SmolLM2-135M-Instruct
    mkdir -p "$model" && cp .gpu/smollm2/* "$model"/
    python3 -c "
import sys, torch, transformers
from transformers import LlamaConfig, LlamaForCausalLM
config = LlamaConfig.from_pretrained(sys.argv[1])
torch.manual_seed(0)
LlamaForCausalLM(config).save_pretrained(sys.argv[1])
print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())
" "$model" || exit 1
    nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.used --format=csv | tee "$OUT/summary.txt"
    local pytest=(python3 -m pytest -q -p no:cacheprovider -o addopts= -m "not slow" -ra)
    stage kernel_tests 180 "${pytest[@]}" tests/kernels/test_kv_store.py tests/kernels/test_lora.py \
        tests/kernels/test_paged_attention.py tests/kernels/test_token_bitmask.py tests/adapters/test_metadata.py
    stage engine_tests 150 "${pytest[@]}" tests/engine/test_cuda_engine.py
    stage throughput 150 python3 bench/throughput.py --device cuda --dtype bfloat16 --num-requests 256 \
        --max-num-seqs 256 --max-output 128 --hf-batch-sizes 64,128,256 --workload-repeats 3 --hf-sweep-once \
        --repeats 3
    stage lora 120 python3 bench/lora.py --device cuda --dtype bfloat16 --num-requests 128 --max-num-seqs 128 \
        --adapter-counts 1,16 --repeats 3
    cat "$OUT/summary.txt"
}

case "${1:-}" in
prepare) prepare ;;
run) run ;;
*) echo "usage: $0 prepare|run" >&2 && exit 2 ;;
esac
