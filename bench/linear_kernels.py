"""Each linear kernel on SmolLM2's layer shapes, against float32 at the same rows, in one run.

Rows 1 (batch-1 decode), 8 and 64 (batched decode) and 512 (a prefill chunk); shapes qkv 576x960,
o 576x576, gate_up 576x3072, down 1536x576 and the LM head 576x49152 (random weights of the model's
sizes: speed does not depend on the values). The float32 baseline is the better of ``torch.mm`` and
oneDNN's prepacked linear (the peers' kernels). Candidates: loomlm's float32 GEMM on AVX2 panels
(``panels fp32 avx2``; the engine picks per shape at load among the three), its bf16-weight GEMM on
AVX-512 BF16 panels (``bf16 panels avx512``) beside oneDNN's bf16 GEMM (``bf16 onednn``: the two
``quantization="bf16"`` picks between; input rounded to bf16, result float32), its Q4_1 and Q8_0 block
kernels and its int8 GEMM on every instruction set this CPU runs, and oneDNN's int8 GEMM
(``torch._int_mm``). Each cell is the median of ``--repeats`` rounds; within a round every kernel runs
once in turn (interleaved), after a warm-up. Same threads for all (torch's intra-op pool).

    .venv/bin/python bench/linear_kernels.py --write-results
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from collections.abc import Callable

import torch
from bench_common import cpu_model, write_results

from loomlm.engine.dtype_choice import native_bf16_flags
from loomlm.kernels import quant_linear as ql
from loomlm.kernels.cpu_gemm import onednn_available, pack_weight, packed_linear, panel_gemm_available
from loomlm.kernels.cpu_gemm_bf16 import bf16_panel_linear, bf16_panels_available, pack_bf16_panels
from loomlm.kernels.native import _C

SHAPES = {
    "qkv": (576, 960),
    "o": (576, 576),
    "gate_up": (576, 3072),
    "down": (1536, 576),
    "lm_head": (576, 49152),
}
_NO_SMOOTHING = torch.empty(0)


def candidates(in_features: int, out_features: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """name -> fn(x) for one shape; "fp32" is the baseline's best kernel."""
    torch.manual_seed(0)
    weight = torch.randn(out_features, in_features) * 0.05
    weight_t = weight.t().contiguous()
    fns = {"fp32 torch.mm": lambda x: x @ weight_t}
    if onednn_available():
        packed = pack_weight(weight_t, "onednn")
        fns["fp32 onednn"] = lambda x: packed_linear("onednn", x, packed, None, out_features)
    if panel_gemm_available():
        # loomlm's float32 GEMM is a candidate column, not part of the float32 baseline (the peers).
        panels = pack_weight(weight_t, "loomlm")
        fns["panels fp32 avx2"] = lambda x: packed_linear("loomlm", x, panels, None, out_features)
    if bf16_panels_available():
        bf16_panels = pack_bf16_panels(weight_t)
        fns["bf16 panels avx512"] = lambda x: bf16_panel_linear(x, bf16_panels, None, out_features)
    if onednn_available() and native_bf16_flags():
        # quantization="bf16"'s other kernel: the input rounded, oneDNN's bf16 GEMM, widened back.
        onednn_bf16 = pack_weight(weight_t.bfloat16(), "onednn")
        fns["bf16 onednn"] = lambda x: packed_linear(
            "onednn", x.bfloat16(), onednn_bf16, None, out_features
        ).float()
    if _C is None:
        return fns
    q4 = ql.pack_blocks(ql.quantize_q4_1(weight), "q4_1", in_features)
    q8 = ql.pack_blocks(ql.quantize_q8_0(weight), "q8_0", in_features)
    w_scale = weight.abs().amax(dim=1) / 127
    qweight = torch.round(weight / w_scale[:, None]).to(torch.int8).contiguous()
    for isa in _C.supported_isas():
        if isa == "scalar":
            continue
        fns[f"q4_1 {isa}"] = lambda x, isa=isa: _C.q4_1_linear(x, q4.qs, q4.scales, q4.mins, isa)
        fns[f"q8_0 {isa}"] = lambda x, isa=isa: _C.q8_0_linear(x, q8.qs, q8.scales, isa)
    if "avx2" in _C.supported_isas():
        # Both AVX2 int8 kernels at every row count: where they cross sets int8_linear's switch.
        for kernel in ("avx2_tiles", "avx2_gemm"):
            fns[f"int8 {kernel}"] = lambda x, k=kernel: _C.int8_linear(
                x, qweight, w_scale, _NO_SMOOTHING, None, k
            )
    if "avx512_vnni" in _C.supported_isas():
        # loomlm's VNNI tiles beside oneDNN at every row count: where they cross sets the switch.
        fns["int8 avx512_vnni_tiles"] = lambda x: _C.int8_linear(
            x, qweight, w_scale, _NO_SMOOTHING, None, "avx512_vnni_tiles"
        )
    fns["int8 onednn"] = lambda x: _C.int8_linear(x, qweight, w_scale, _NO_SMOOTHING, None, "onednn")
    return fns


def measure(rows_list: list[int], repeats: int, only: list[str]) -> dict[tuple[str, int], dict[str, float]]:
    results = {}
    for shape, (k, n) in SHAPES.items():
        fns = {
            name: fn
            for name, fn in candidates(k, n).items()
            if name.startswith("fp32") or not only or any(name.startswith(o) for o in only)
        }
        for rows in rows_list:
            if shape == "lm_head" and rows > 64:
                continue  # the engine computes logits only for each sequence's last token
            x = torch.randn(rows, k)
            for fn in fns.values():
                fn(x)
            times = {name: [] for name in fns}
            for _ in range(repeats):
                for name, fn in fns.items():
                    start = time.perf_counter()
                    fn(x)
                    times[name].append(time.perf_counter() - start)
            results[shape, rows] = {name: statistics.median(t) * 1e3 for name, t in times.items()}
            print(shape, rows, {k: round(v, 3) for k, v in results[shape, rows].items()}, flush=True)
    return results


def table(results: dict[tuple[str, int], dict[str, float]]) -> str:
    names = sorted({name for cell in results.values() for name in cell if not name.startswith("fp32")})
    lines = [
        "| shape (in x out) | rows | fp32 best ms | " + " | ".join(names) + " |",
        "|---|---:|---:|" + "---:|" * len(names),
    ]
    for (shape, rows), cell in results.items():
        base = min(ms for name, ms in cell.items() if name.startswith("fp32"))
        ratios = " | ".join(f"{base / cell[name]:.2f}x" if name in cell else "-" for name in names)
        k, n = SHAPES[shape]
        lines.append(f"| {shape} ({k}x{n}) | {rows} | {base:.3f} | {ratios} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="1,8,16,32,64,512")
    p.add_argument("--only", default="", help="kernel name prefixes to run beside fp32 (comma-separated)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--write-results", action="store_true")
    p.add_argument("--section", default="linear_kernels", help="RESULTS.md section (a run of a subset)")
    args = p.parse_args()
    threads = torch.get_num_threads()
    only = [prefix for prefix in args.only.split(",") if prefix]
    results = measure([int(r) for r in args.rows.split(",")], args.repeats, only)
    text = table(results)
    print(text)
    if args.write_results:
        isas = ", ".join(_C.supported_isas()) if _C is not None else "loomlm._C not built"
        header = (
            f"{datetime.date.today()} · {cpu_model()} (torch CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}; loomlm kernels: {isas}) · {threads} threads · "
            f"torch {torch.__version__} · medians of {args.repeats} interleaved rounds · cells: float32's "
            "best time over the kernel's (above 1 = faster than float32)\n\n"
        )
        write_results(args.section, header + text + "\n", quick=False)


if __name__ == "__main__":
    main()
