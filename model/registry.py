"""Named CITab variants (timm-style registry): the paper model and the ablations of Tables 2 and 3.

A variant is a function returning constructor arguments of :class:`model.citab.CITab`, registered
with :func:`register_variant`; every variant is the paper configuration with a few keys changed.
The BioBERT header ablation is not a model variant: it is the same model on another header bank.
The "w/o SSL" ablation is fine-tuning without a pretrained checkpoint.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable

import torch

from model.citab import CITab

__all__ = ["PAPER_CONFIG", "build_model", "list_variants", "register_variant", "variant_config"]

# The paper model as the official code runs it (docs/model.md 2-5, 8). The header width comes from
# the header bank (768 for bert-base-uncased).
PAPER_CONFIG: dict = {
    "resnet_depth": 50,
    "resnet_widths": [64, 128, 256, 512],
    "in_channels": 1,
    "embed_dim": 512,
    "num_layers": 4,
    "num_heads": 8,
    "num_experts": 5,
    "use_pmolin": True,
    "expert_hidden": None,
    "tabular_mlp_hidden": None,
    "use_header": True,
    "use_mask": True,
    "fusion": "unified",
    "fusion_layers": 4,
    "fusion_mlp_ratio": 4.0,
    "projection_dim": 128,
    "image_head_hidden": None,
    "tabular_head_hidden": None,
    "num_classes": 3,
    "temperature": 0.1,
    "use_itc": True,
    "use_itm": True,
    "hard_negatives": "sample",
}

_VARIANTS: dict[str, Callable[[], dict]] = {}


def register_variant(fn: Callable[[], dict] | None = None, *, name: str | None = None):
    """Register a function returning a variant's constructor arguments under its name (or ``name``)."""

    def register(function: Callable[[], dict]) -> Callable[[], dict]:
        key = name or function.__name__
        if key in _VARIANTS:
            raise ValueError(f"model variant {key!r} is already registered")
        _VARIANTS[key] = function
        return function

    return register(fn) if fn is not None else register


@register_variant
def citab() -> dict:
    """The paper model (E = 5 P-MoLin experts, header embeddings, masked attention, unified fusion, ITC + ITM)."""
    return copy.deepcopy(PAPER_CONFIG)


@register_variant
def citab_no_header() -> dict:
    """Table 2 "w/o header embedding": value tokens are not multiplied by header vectors."""
    return {**citab(), "use_header": False}


@register_variant
def citab_no_mask() -> dict:
    """Table 2 "w/o mask attention": padded columns stay visible in attention (padding token kept)."""
    return {**citab(), "use_mask": False}


@register_variant
def citab_no_pmolin() -> dict:
    """Table 2 "w/o P-MoLin": a plain GELU MLP D -> 4D -> D in every tabular layer."""
    return {**citab(), "use_pmolin": False}


@register_variant
def citab_cross_attention() -> dict:
    """Table 2 "replace with cross-attention": tabular tokens attend to image tokens (TIP-style fusion)."""
    return {**citab(), "fusion": "cross"}


@register_variant
def citab_no_itc() -> dict:
    """Table 2 "w/o ITC": pretraining with the ITM loss only."""
    return {**citab(), "use_itc": False}


@register_variant
def citab_no_itm() -> dict:
    """Table 2 "w/o ITM": pretraining with the ITC loss only."""
    return {**citab(), "use_itm": False}


def _experts_variant(num_experts: int) -> Callable[[], dict]:
    def variant() -> dict:
        return {**citab(), "num_experts": num_experts}

    variant.__doc__ = f"Table 3: E = {num_experts} P-MoLin experts per tabular layer (E = 5 is citab)."
    return variant


for _experts in (3, 4, 6):
    register_variant(_experts_variant(_experts), name=f"citab_e{_experts}")


def list_variants() -> list[str]:
    """Names of the registered variants, sorted."""
    return sorted(_VARIANTS)


def variant_config(name: str) -> dict:
    """Constructor arguments of variant ``name`` (a fresh copy), without the header bank and stage."""
    if name not in _VARIANTS:
        raise KeyError(f"unknown model variant {name!r}; registered: {', '.join(list_variants())}")
    return copy.deepcopy(_VARIANTS[name]())


def build_model(name: str, header_bank: torch.Tensor, **overrides) -> CITab:
    """Build variant ``name`` on ``header_bank`` [N, D_h], with constructor arguments overridden.

    Args:
        name: a registered variant (see :func:`list_variants`).
        header_bank: float [N, D_h] frozen header vectors.
        **overrides: any :class:`CITab` argument, e.g. ``stage="finetune"``, ``resnet_depth=10``,
            ``resnet_widths=[8, 16, 32, 64]``, ``embed_dim=64``; a key CITab does not take raises
            TypeError naming the valid keys.
    """
    valid = set(inspect.signature(CITab).parameters) - {"header_bank"}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(f"build_model: unknown setting(s) {unknown}; valid: {sorted(valid)}")
    return CITab(header_bank, **{**variant_config(name), **overrides})
