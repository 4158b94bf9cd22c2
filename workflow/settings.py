"""Typed settings of the tables and training stages, built once from the validated config.

One frozen object per job kind: :class:`TablesSettings` (one cohort's model-ready table),
:class:`PretrainSettings` (CITab across tables, or one self-supervised baseline on one cohort),
:class:`FinetuneSettings` and :class:`EvaluateSettings`.
The builders (:func:`tables_settings` here; the training ones in :mod:`workflow.train`, which know
the model registry) read the config and keep exactly what changes a job's result: threads, GPUs
and memory stay out, and a per-cohort rate is resolved for the job's cohort, so a changed setting
reruns exactly the jobs it affects. This module imports neither torch nor the registry: the tables
rule's environment has neither.

How a job gets its settings: the rule's ``params:`` entry holds :meth:`as_params` (plain builtins,
JSON-ready). A training job's local rule writes that to the job's ``settings.json`` and the job
reads it back with :meth:`read`; the tables rule's script gets it back with :meth:`from_params`;
every key is checked either way. The object itself never goes into ``params:``: Snakemake compares
params by the ``repr`` of builtin values and skips any other object, so a changed dataclass there
would never trigger a rerun.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from model.augment_settings import AugmentSettings

# Keys of a config section that say how a job runs, not what it computes.
PRETRAIN_RUNTIME_KEYS = ("gpus", "cpu_processes", "threads", "mem_mb")
FINETUNE_RUNTIME_KEYS = ("gpus", "threads", "mem_mb", "seeds")
# Keys that choose which jobs exist (or override others per variant), not one job's settings.
PRETRAIN_PLAN_KEYS = ("variant_settings",)
FINETUNE_PLAN_KEYS = ("pretrained", "scratch_variants", "variant_settings")
# Files the tables stage reads (inputs of its rule, not settings).
TABLES_INPUT_KEYS = ("columns", "split_tables")


class SettingsError(ValueError):
    """A settings file or mapping that does not match its settings type."""


@dataclass(frozen=True)
class _Settings:
    """Conversion shared by the settings types: plain mapping <-> typed object."""

    kind: ClassVar[str] = ""

    def as_params(self) -> dict[str, Any]:
        """The settings as JSON-ready builtins with sorted keys (a rule's ``params:`` entry)."""
        return json.loads(json.dumps(dataclasses.asdict(self), sort_keys=True))

    def write(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.as_params(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def from_params(cls, values: dict[str, Any], source: str = "settings"):
        """The object of ``values`` (an :meth:`as_params` mapping); ``source`` names it in errors.

        Raises SettingsError naming the missing and unknown keys.
        """
        names = set(field_names(cls))
        missing, unknown = sorted(names - set(values)), sorted(set(values) - names)
        if missing or unknown:
            raise SettingsError(f"{source}: not {cls.kind} settings (missing keys {missing}, unknown keys {unknown})")
        return cls(**{name: _typed(name, value) for name, value in values.items()})

    @classmethod
    def read(cls, path: str | Path):
        """The settings in the JSON file at ``path`` (written by :meth:`write`)."""
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise SettingsError(f"{path}: cannot read {cls.kind} settings ({error})") from None
        if not isinstance(values, dict):
            raise SettingsError(f"{path}: {cls.kind} settings must be a JSON object")
        return cls.from_params(values, source=str(path))


def _typed(name: str, value: Any) -> Any:
    """The typed form of one field read from JSON (tuples for shapes and names, nested types)."""
    if name == "augment":
        return AugmentSettings(**{**value, "flip_axes": tuple(value["flip_axes"])})
    if name in ("image_shape", "class_names") or (name == "class_weights" and value is not None):
        return tuple(value)
    return value


@dataclass(frozen=True)
class TablesSettings(_Settings):
    """How one cohort's model-ready table is built (config ``tables``, workflow/schemas/tables.schema.yaml).

    Attributes:
        window_days: largest |visit date - image date| of a pair, in days.
        exact_visit_code: a visit of the image's own visit code wins before dates are compared.
        timepoint: which pair per subject is kept ("first", "last" or "random").
        seed: seed of the split and of the random timepoint.
        split_fractions: ``{"train", "val", "test"}`` subject fractions (sum 1).
        stats_scope: rows the encoding statistics come from ("train_split" or "whole_table").
        zscore_categorical: z-score categorical codes too.
    """

    kind: ClassVar[str] = "tables"

    window_days: int
    exact_visit_code: bool
    timepoint: str
    seed: int
    split_fractions: dict[str, float]
    stats_scope: str
    zscore_categorical: bool


@dataclass(frozen=True)
class PretrainSettings(_Settings):
    """What one pretraining job computes with (config ``pretrain``, plus a self-supervised
    baseline's ``pretrain.variant_settings`` entry, plus the ``model`` section).

    Attributes:
        epochs, warmup_epochs: epochs; linear warm-up epochs before the cosine decay.
        batch_size: samples per process and step. lr, weight_decay: Adam's.
        seed: initial weights, data order and every random draw.
        augment_probability: share of augmented training images; augment: their strengths.
        image_shape: model input (X, Y, Z).
        checkpoint_every, val_every: epochs between resume points; between validation passes.
        bf16: bfloat16 autocast on GPU. cache_volumes: keep volumes in memory.
        corruption_rate: share of columns replaced in the corrupted contrastive view of a
            self-supervised baseline, for the job's cohort (0 for CITab).
        model: the ``model`` section (sizes; each variant's constructor takes its keys).
    """

    kind: ClassVar[str] = "pretrain"

    epochs: int
    warmup_epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    augment_probability: float
    augment: AugmentSettings
    image_shape: tuple[int, int, int]
    checkpoint_every: int
    val_every: int
    bf16: bool
    cache_volumes: bool
    corruption_rate: float
    model: dict[str, Any]


@dataclass(frozen=True)
class FinetuneSettings(_Settings):
    """What one fine-tuning job (variant, cohort, seed) computes with.

    Attributes:
        model_variant: the registered variant the row trains; pretrained: whether it starts from
            pretrained encoders.
        epochs, batch_size, lr, weight_decay: the loop's (constant learning rate).
        strategy: "trainable" (everything learns) or "frozen" (the classifier only).
        shuffle, drop_last: the training loader's.
        augment_probability, corruption_rate: the job's cohort's rates (docs/model.md 6.3).
        selection: rule that picks the best epoch; class_weights: cross-entropy weights or None.
        class_names: label 0, 1, ... names. checkpoint_every: epochs between resume points.
        bf16: bfloat16 autocast on GPU.
        tabular_prior: HyperFusion's first stage (``epochs``, ``lr``, ``class_weights``); None otherwise.
        image_shape, augment, cache_volumes: shared with pretraining (``pretrain`` section).
        model: the ``model`` section.
    """

    kind: ClassVar[str] = "finetune"

    model_variant: str
    pretrained: bool
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    strategy: str
    shuffle: bool
    drop_last: bool
    augment_probability: float
    corruption_rate: float
    selection: str
    class_weights: tuple[float, ...] | None
    class_names: tuple[str, ...]
    checkpoint_every: int
    bf16: bool
    tabular_prior: dict[str, Any] | None
    image_shape: tuple[int, int, int]
    augment: AugmentSettings
    cache_volumes: bool
    model: dict[str, Any]


@dataclass(frozen=True)
class EvaluateSettings(_Settings):
    """What evaluation (and prediction from a bundle) builds and feeds the fine-tuned model with.

    Attributes:
        model_variant: the registered variant; model: the ``model`` section (must match
            training's). image_shape, cache_volumes: as in training. class_names: label names.
        batch_size: test samples per step; bf16: bfloat16 autocast on GPU.
    """

    kind: ClassVar[str] = "evaluate"

    model_variant: str
    model: dict[str, Any]
    image_shape: tuple[int, int, int]
    cache_volumes: bool
    class_names: tuple[str, ...]
    batch_size: int
    bf16: bool


SETTINGS_TYPES: dict[str, type[_Settings]] = {
    cls.kind: cls for cls in (TablesSettings, PretrainSettings, FinetuneSettings, EvaluateSettings)
}


# --- config -> settings ---------------------------------------------------------------------------


def tables_settings(config: dict) -> TablesSettings:
    """The tables stage's settings (the same for every cohort)."""
    section = config["tables"]
    check_known(section, TablesSettings, TABLES_INPUT_KEYS, "tables")
    values = {name: section[name] for name in field_names(TablesSettings)}
    return TablesSettings.from_params(plain(values), source="tables settings")


def check_known(section: dict, cls: type[_Settings], other_keys: tuple[str, ...], name: str) -> None:
    """A config key that no settings field and no runtime or plan key takes would be silently
    ignored: a schema key added without its field here."""
    unknown = sorted(set(section) - set(field_names(cls)) - set(other_keys))
    if unknown:
        raise SettingsError(f"config section {name!r} has keys {unknown} that {cls.__name__} does not carry")


def field_names(cls: type[_Settings]) -> list[str]:
    return [field.name for field in dataclasses.fields(cls)]


def per_cohort(values: dict, cohort: str) -> float:
    return float(values.get(cohort, values["default"]))


def plain(values: dict) -> dict:
    return json.loads(json.dumps(values))


def write_settings(kind: str, values: dict[str, Any], path: str | Path, log_path: str | Path) -> None:
    """Write a job's settings file from its rule's params (``kind``: "pretrain", "finetune" or
    "evaluate"), checked against its type; ``log_path`` gets one line naming the file."""
    settings = SETTINGS_TYPES[kind].from_params(values, source=f"params of {path}")
    settings.write(path)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    Path(log_path).write_text(f"wrote {kind} settings to {path}\n")
