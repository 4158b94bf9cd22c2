"""Named model variants (timm-style registry): CITab, its ablations, and the Table 1 baselines.

A variant is a function returning the constructor arguments of its model class, registered with
:func:`register_variant`. CITab variants (family "citab") are the paper configuration with a few
keys changed; they are built on a header bank and can be pretrained across tables. The Table 1
baselines (docs/baselines.md) are built for one cohort's :class:`model.table_spec.TableSpec`: the
supervised ones (family "supervised") are trained from scratch per cohort, the self-supervised ones
(family "ssl_per_cohort": MMCL, TIP, ViTa) are pretrained on one cohort's training rows and then
fine-tuned on the same cohort. A baseline's variant function returns the paper configuration,
which is also its constructor's defaults.
The BioBERT header ablation is not a model variant: it is the same model on another header bank.
The "w/o SSL" ablation is fine-tuning without a pretrained checkpoint.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

    from model.table_spec import TableSpec

__all__ = [
    "FAMILIES", "PAPER_CONFIG", "VariantInfo", "build_model", "list_variants", "register_variant", "variant_config",
    "variant_info",
]

FAMILIES = ("citab", "supervised", "ssl_per_cohort")
# the stages a baseline of each family has (supervised ones train from scratch)
_BASELINE_STAGES = {"supervised": ("finetune",), "ssl_per_cohort": ("pretrain", "finetune")}

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



# Model classes are named "module:Class" and imported only when a variant is built or its inputs are
# asked for, so that planning the DAG (which needs a variant's family only) does not import torch.
CITAB_CLASS = "model.citab:CITab"


@functools.cache
def _load_class(path: str) -> type[nn.Module]:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class VariantInfo:
    """What the pipeline needs to know about a variant before building it.

    Attributes:
        name: the variant name.
        family: "citab" (header-bank model, pretrained across tables, then fine-tuned),
            "supervised" (a Table 1 baseline, bound to one table, trained from scratch per cohort)
            or "ssl_per_cohort" (a Table 1 baseline pretrained on one cohort, then fine-tuned on it).
        class_path: the class :func:`build_model` instantiates, as ``"module:Class"``.

    Properties (the last three import the model class, and so torch):
        pretrains_across_tables: True for CITab variants; False for baselines, which cannot be
            pretrained on a mix of tables.
        pretrains_per_cohort: True for the "ssl_per_cohort" family.
        model_class: the class itself.
        input_names: the batch entries ``classify`` takes, in order (see ``model/__init__.py``).
        pretrain_input_names: the batch entries ``pretrain_losses`` takes, in order; () for a
            variant without a pretraining stage.
    """

    name: str
    family: str
    class_path: str

    @property
    def pretrains_across_tables(self) -> bool:
        return self.family == "citab"

    @property
    def pretrains_per_cohort(self) -> bool:
        return self.family == "ssl_per_cohort"

    @property
    def model_class(self) -> type[nn.Module]:
        return _load_class(self.class_path)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.model_class.input_names)

    @property
    def pretrain_input_names(self) -> tuple[str, ...]:
        return tuple(getattr(self.model_class, "pretrain_input_names", ()))


@dataclass(frozen=True)
class _Variant:
    make_config: Callable[[], dict]
    class_path: str
    family: str

    @property
    def model_class(self) -> type[nn.Module]:
        return _load_class(self.class_path)


_VARIANTS: dict[str, _Variant] = {}


def register_variant(
    fn: Callable[[], dict] | None = None, *, name: str | None = None, model_class: str = CITAB_CLASS,
    family: str | None = None,
):
    """Register a function returning a variant's constructor arguments under its name (or ``name``).

    ``model_class`` names the class the arguments are for, as ``"module:Class"`` (CITab unless
    given); any other class is a Table 1 baseline taking a ``table`` (:class:`TableSpec`) or no
    table at all. ``family`` is "citab" for CITab and "supervised" for other classes unless given
    (e.g. "ssl_per_cohort").
    """
    chosen = family or ("citab" if model_class == CITAB_CLASS else "supervised")
    if chosen not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {chosen!r}")

    def register(function: Callable[[], dict]) -> Callable[[], dict]:
        key = name or function.__name__
        if key in _VARIANTS:
            raise ValueError(f"model variant {key!r} is already registered")
        _VARIANTS[key] = _Variant(function, model_class, chosen)
        return function

    return register(fn) if fn is not None else register


def _constructor_keys(model_class: type[nn.Module]) -> set[str]:
    """Constructor arguments of a model class other than its table / header bank."""
    return set(inspect.signature(model_class).parameters) - {"table", "header_bank"}


def _constructor_defaults(class_path: str) -> dict:
    """A baseline's constructor defaults (its paper configuration) without the stage, JSON-serialisable."""
    from model.baselines.common import config_dict

    model_class = _load_class(class_path)
    parameters = inspect.signature(model_class).parameters
    return config_dict(**{key: parameters[key].default for key in sorted(_constructor_keys(model_class) - {"stage"})})


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


# --- Table 1 supervised baselines (docs/baselines.md) -------------------------------------------


@register_variant(model_class="model.baselines:ImageResNet")
def resnet50() -> dict:
    """Table 1 "3D ResNet-50": image only, ResNet + global average pool + linear classifier."""
    return _constructor_defaults("model.baselines:ImageResNet")


@register_variant(model_class="model.baselines:TabularTransformer")
def transformer() -> dict:
    """Table 1 "Transformer": table only, the TIP tabular transformer + linear classifier on its CLS."""
    return _constructor_defaults("model.baselines:TabularTransformer")


@register_variant(model_class="model.baselines:ConcatFusion")
def concat() -> dict:
    """Table 1 "Concat": pooled ResNet features concatenated with a tabular MLP embedding."""
    return _constructor_defaults("model.baselines:ConcatFusion")


@register_variant(model_class="model.baselines:DAFT")
def daft() -> dict:
    """Table 1 "DAFT": the ResNet's last block scales and shifts its input by the table."""
    return _constructor_defaults("model.baselines:DAFT")


@register_variant(model_class="model.baselines:CrossAttentionFusion")
def cross_attention() -> dict:
    """Table 1 "Cross-attention" (this project's design): bidirectional image-table cross-attention."""
    return _constructor_defaults("model.baselines:CrossAttentionFusion")


@register_variant(model_class="model.baselines:HyperFusion")
def hyperfusion() -> dict:
    """Table 1 "HyperFusion": pre-activation ResNet with a table-generated shortcut in the last block."""
    return _constructor_defaults("model.baselines:HyperFusion")


# --- Table 1 self-supervised baselines, pretrained per cohort (docs/baselines.md 7-10) -----------


@register_variant(model_class="model.ssl_baselines:MMCL", family="ssl_per_cohort")
def mmcl() -> dict:
    """Table 1 "MMCL": CLIP pretraining of a ResNet and a tabular MLP; the image encoder alone is fine-tuned."""
    return _constructor_defaults("model.ssl_baselines:MMCL")


@register_variant(model_class="model.ssl_baselines:TIP", family="ssl_per_cohort")
def tip() -> dict:
    """Table 1 "TIP": contrastive + matching + masked reconstruction pretraining; fused fine-tuning."""
    return _constructor_defaults("model.ssl_baselines:TIP")


@register_variant(model_class="model.ssl_baselines:ViTa", family="ssl_per_cohort")
def vita() -> dict:
    """Table 1 "ViTa" (this project's version): CLIP with a tabular ViT; both encoders fine-tuned."""
    return _constructor_defaults("model.ssl_baselines:ViTa")


# --- lookup and construction -----------------------------------------------------------------------


def _variant(name: str) -> _Variant:
    if name not in _VARIANTS:
        raise KeyError(f"unknown model variant {name!r}; registered: {', '.join(list_variants())}")
    return _VARIANTS[name]


def list_variants(family: str | None = None) -> list[str]:
    """Names of the registered variants, sorted: all of them, or those of one family (see :data:`FAMILIES`)."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return sorted(name for name in _VARIANTS if family is None or _VARIANTS[name].family == family)


def variant_config(name: str) -> dict:
    """Constructor arguments of variant ``name`` (a fresh copy), without the header bank / table and stage."""
    return copy.deepcopy(_variant(name).make_config())


def variant_info(name: str) -> VariantInfo:
    """Family and model class of variant ``name`` (KeyError if unknown); see :class:`VariantInfo`."""
    variant = _variant(name)
    return VariantInfo(name=name, family=variant.family, class_path=variant.class_path)


def build_model(
    name: str, header_bank: torch.Tensor | None = None, *, table: TableSpec | None = None, **overrides,
) -> nn.Module:
    """Build variant ``name`` with constructor arguments overridden.

    Args:
        name: a registered variant (see :func:`list_variants`).
        header_bank: float [N, D_h] frozen header vectors; required for CITab variants, ignored by
            baselines.
        table: the cohort's :class:`TableSpec`; required for baselines, ignored by CITab variants.
        **overrides: for a CITab variant any :class:`CITab` argument (``stage="finetune"``,
            ``resnet_depth=10``, ...); a key CITab does not take raises TypeError naming the valid
            keys. For a baseline, the pipeline's ``model:`` section plus ``stage``: the baseline
            takes the keys of its own constructor and ignores the other models' keys (a key that
            no registered model takes raises TypeError); ``stage`` must be "finetune" for a
            supervised baseline (ValueError otherwise: it trains from scratch per cohort), and
            "pretrain" or "finetune" (the default) for a self-supervised one.

    Returns:
        A :class:`CITab` or a baseline model (``input_names``, ``classify``, ``config``, ``stage``;
        the self-supervised ones also ``pretrain_input_names``, ``pretrain_losses`` and
        ``load_pretrained_encoders``).
    """
    variant = _variant(name)
    if variant.class_path == CITAB_CLASS:
        valid = _constructor_keys(variant.model_class)
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise TypeError(f"build_model: unknown setting(s) {unknown}; valid: {sorted(valid)}")
        if header_bank is None:
            raise TypeError(f"build_model: variant {name!r} is a CITab model and needs header_bank")
        return variant.model_class(header_bank, **{**variant_config(name), **overrides})

    valid_anywhere = set().union(*(_constructor_keys(v.model_class) for v in _VARIANTS.values())) | {"stage"}
    unknown = sorted(set(overrides) - valid_anywhere)
    if unknown:
        raise TypeError(f"build_model: unknown setting(s) {unknown}; valid: {sorted(valid_anywhere)}")
    if table is None:
        raise TypeError(f"build_model: baseline {name!r} is bound to one table and needs table=TableSpec(...)")
    stage = overrides.pop("stage", "finetune")
    stages = _BASELINE_STAGES[variant.family]
    if stage not in stages:
        raise ValueError(
            f"build_model: baseline {name!r} has no {stage!r} stage; supervised baselines train from scratch "
            f"per cohort (stage {' or '.join(map(repr, stages))} only)"
        )
    own_keys = _constructor_keys(variant.model_class)
    arguments = {**variant_config(name), **{k: v for k, v in overrides.items() if k in own_keys}}
    if "stage" in own_keys:
        arguments["stage"] = stage
    if "table" in inspect.signature(variant.model_class).parameters:
        return variant.model_class(table, **arguments)
    return variant.model_class(**arguments)
