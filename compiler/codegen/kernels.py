"""Every kernel variant sqc can emit, and the renderer of their jinja2 templates.

Tests and benchmarks iterate over :data:`KERNEL_VARIANTS`; the code generator picks from it.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from functools import lru_cache

import jinja2

from sqc.compiler.codegen.packing import f32_gemm_knobs, int8_gemm_knobs
from sqc.compiler.codegen.sparse_packing import SPARSE_TARGETS, sparse_gemm_knobs


@dataclass(frozen=True)
class KernelVariant:
    """One rendered form of a template: its name states the math (STYLE.md, Kernels)."""

    name: str  # e.g. sqc_f32_gemm_6x16__avx2: C micro-tile rows x columns, ISA
    template: str  # path under sqc.templates
    isa: str
    knobs: dict = field(hash=False)


def _f32_gemm_variant(isa: str) -> KernelVariant:
    knobs = f32_gemm_knobs(isa)
    return KernelVariant(
        name=f"sqc_f32_gemm_{knobs['mr']}x{knobs['nr']}__{isa}",
        template="kernels/f32_gemm.h.j2",
        isa=isa,
        knobs=knobs,
    )


def _int8_gemm_variant(isa: str) -> KernelVariant:
    knobs = int8_gemm_knobs(isa)
    mr = knobs["amx_mr"] if knobs["amx"] else knobs["mr"]
    return KernelVariant(
        name=f"sqc_u8s8_gemm_{mr}x{knobs['nr']}__{isa}",
        template=INT8_GEMM_TEMPLATE,
        isa=isa,
        knobs=knobs,
    )


def _sparse_gemm_variant(isa: str, int8_isa: str) -> KernelVariant:
    knobs = sparse_gemm_knobs(isa, int8_isa)
    # One render defines both sqc_f32_spmm (fp32 isa) and sqc_u8s8_spmm (int8 isa); the variant's
    # isa is the int8 one, whose compiler flags include the fp32 isa's.
    return KernelVariant(
        name=f"sqc_f32_spmm_{knobs['f32_tt']}t__{isa}_u8s8_spmm_{knobs['i8_tt']}t__{int8_isa}",
        template=SPARSE_GEMM_TEMPLATE,
        isa=int8_isa,
        knobs=knobs,
    )


F32_GEMM_TEMPLATE = "kernels/f32_gemm.h.j2"
# Rendered after f32_gemm.h.j2 in the same C file (it reuses that header's GELU vector helpers).
INT8_GEMM_TEMPLATE = "kernels/int8_gemm.h.j2"
# Rendered after f32_gemm.h.j2 (fp32 isa) and int8_gemm.h.j2 (int8 isa), once per model.
SPARSE_GEMM_TEMPLATE = "kernels/sparse_gemm.h.j2"

KERNEL_VARIANTS: list[KernelVariant] = [
    _f32_gemm_variant("avx512"),
    _f32_gemm_variant("avx2"),
    _int8_gemm_variant("avx512_vnni"),
    _int8_gemm_variant("avx512_amx"),
    _int8_gemm_variant("avx_vnni"),
    _int8_gemm_variant("avx2"),
    *(_sparse_gemm_variant(isa, int8_isa) for isa, int8_isa in SPARSE_TARGETS),
]


def f32_gemm_variant(isa: str) -> KernelVariant:
    """The dense fp32 GEMM variant the code generator uses for ``isa``."""
    return next(
        v for v in KERNEL_VARIANTS if v.isa == isa and v.template == "kernels/f32_gemm.h.j2"
    )


def int8_gemm_variant(isa: str) -> KernelVariant:
    """The u8 x s8 GEMM variant for ``isa`` ("avx512_vnni", "avx512_amx", "avx_vnni" or "avx2")."""
    for v in KERNEL_VARIANTS:
        if v.isa == isa and v.template == INT8_GEMM_TEMPLATE:
            return v
    raise ValueError(f"int8 GEMM: unknown isa {isa!r}")


def sparse_gemm_variant(isa: str, int8_isa: str) -> KernelVariant:
    """The sparse GEMM variant (sqc_f32_spmm + sqc_u8s8_spmm) for the target (isa, int8_isa)."""
    for v in KERNEL_VARIANTS:
        if v.template == SPARSE_GEMM_TEMPLATE and (v.knobs["isa"], v.isa) == (isa, int8_isa):
            return v
    raise ValueError(f"sparse GEMM: unknown target isa={isa!r} int8_isa={int8_isa!r}")


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    templates = importlib.resources.files("sqc.templates")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_kernel(template_name: str, **knobs: object) -> str:
    """Render ``template_name`` (a path under sqc.templates) with ``knobs``; unknown names fail."""
    return _environment().get_template(template_name).render(**knobs)
