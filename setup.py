"""Builds loomlm._C, the CPU kernels in csrc/ (block-quantized and int8 linear layers, the per-layer
ops, the fused decode stack, multi-LoRA), against the installed torch. Install with
``pip install --no-build-isolation -e .`` after torch, so the extension is compiled for the torch it
will load into. Without torch at build time (or on a non-x86 machine) the package installs without
it and every op runs its pure-torch reference (slower, same results to float rounding)."""

import platform
import sys

from setuptools import setup

ext_modules, cmdclass = [], {}
try:
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ImportError:
    print("loomlm: torch is not importable at build time; building without the CPU kernels", file=sys.stderr)
else:
    if platform.machine().lower() in ("x86_64", "amd64"):
        # No -march=native: the AVX-512 code is compiled per function and chosen at run time.
        # -fopenmp makes at::parallel_for (inline in ATen's headers) parallel; the runtime it binds
        # is torch's own libgomp.so.1, already loaded under that soname, so there is one thread pool.
        # -ffp-contract=off: no fused multiply-adds the torch references do not make either.
        # -fno-trapping-math: no result changes (nothing reads the FP exception flags), but without it
        # GCC 12 left the exp of SiLU and the softmax scalar (it will not if-convert float compares).
        ext_modules = [
            CppExtension(
                "loomlm._C",
                [
                    "csrc/bindings.cpp",
                    "csrc/torch_ops.cpp",
                    "csrc/int8_ops.cpp",
                    "csrc/decode_stack.cpp",
                    "csrc/quant_kernels.cpp",
                    "csrc/quant_avx2.cpp",
                    "csrc/int8_gemm_avx2.cpp",
                    "csrc/int8_vnni.cpp",
                    "csrc/attention_avx2.cpp",
                    "csrc/attention_ops.cpp",
                    "csrc/prefill_attention_avx2.cpp",
                    "csrc/model_ops.cpp",
                    "csrc/lora_ops.cpp",
                    "csrc/lora_avx2.cpp",
                    "csrc/lora_avx512.cpp",
                    "csrc/lora_vnni.cpp",
                    "csrc/lora_torch.cpp",
                    "csrc/f32_gemm.cpp",
                    "csrc/f32_gemm_avx2.cpp",
                    "csrc/bf16_gemm.cpp",
                    "csrc/bf16_gemm_avx512.cpp",
                ],
                extra_compile_args=[
                    "-O3",
                    "-std=c++17",
                    "-fopenmp",
                    "-ffp-contract=off",
                    "-fno-trapping-math",
                ],
                extra_link_args=["-fopenmp"],
            )
        ]
        cmdclass = {"build_ext": BuildExtension.with_options(use_ninja=False)}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
