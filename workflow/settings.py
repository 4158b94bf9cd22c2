"""Typed settings of every stage, built once from the validated config.

One frozen object per job kind: :class:`ConvertSettings` (one raw download's conversion),
:class:`SyntheticCohortSettings` (one synthetic cohort's files), :class:`IntakeSettings` (how one
cohort's native files are read), :class:`TablesSettings` (one cohort's model-ready table),
:class:`HeaderEmbeddingSettings` (one encoder's header vectors), one per preprocessing step
(:class:`InputCheckSettings`, :class:`TemplateSettings`, :class:`N4Settings`,
:class:`RegistrationSettings`, :class:`SkullstripSettings`, :class:`ModelReadySettings`,
:class:`QcThresholds`, gathered in :class:`PreprocessSettings` for bundles),
:class:`PretrainSettings` (CITab across tables, or one self-supervised baseline on one cohort),
:class:`FinetuneSettings` and :class:`EvaluateSettings`.
The builders (:func:`convert_settings`, :func:`synthetic_cohort_settings`, :func:`intake_settings`,
:func:`tables_settings` and :func:`preprocess_settings` here; the header one in
:mod:`workflow.header_encoders`; the training ones in :mod:`workflow.train`, which know the model
registry) read the config and keep exactly what changes a job's result: threads, GPUs and memory
stay out (but :class:`PreprocessSettings` records the threads for bundles), and a per-cohort rate
or size is resolved for the job's cohort, so a changed setting reruns exactly the jobs it affects.
This module imports neither torch nor the registry: the synthesize, intake, tables and
preprocessing rules' environments have neither.

How a job gets its settings: the rule's ``params:`` entry holds :meth:`as_params` (plain builtins,
JSON-ready). A training job's local rule writes that to the job's ``settings.json`` and the job
reads it back with :meth:`read`; the other rules' scripts get it back with :meth:`from_params`;
every key is checked either way. The object itself never goes into ``params:``: Snakemake compares
params by the ``repr`` of builtin values and skips any other object, so a changed dataclass there
would never trigger a rerun.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
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

        Nested settings and tuples come back typed, by the fields' annotations. Raises
        SettingsError naming the missing and unknown keys.
        """
        return _from_mapping(cls, values, source)

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


def _from_mapping(cls: type, values: Any, source: str) -> Any:
    """``cls`` (a frozen dataclass) built from a JSON mapping, every key checked, every field typed."""
    if not isinstance(values, dict):
        raise SettingsError(f"{source}: {getattr(cls, 'kind', '') or cls.__name__} settings must be a mapping, "
                            f"got {type(values).__name__}")
    names = set(field_names(cls))
    missing, unknown = sorted(names - set(values)), sorted(set(values) - names)
    if missing or unknown:
        raise SettingsError(f"{source}: not {getattr(cls, 'kind', '') or cls.__name__} settings "
                            f"(missing keys {missing}, unknown keys {unknown})")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _typed(hints[name], value, f"{source}: {name}") for name, value in values.items()})


def _typed(hint: Any, value: Any, source: str) -> Any:
    """A JSON value as its field's annotation types it: nested settings, tuples, or as it is."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(hint) if option is not type(None)]
        return _typed(options[0], value, source) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint):
        return _from_mapping(hint, value, source)
    if origin is tuple:
        items = typing.get_args(hint)
        if len(items) == 2 and items[1] is Ellipsis:
            return tuple(_typed(items[0], item, source) for item in value)
        return tuple(_typed(item_hint, item, source) for item_hint, item in zip(items, value)) if items else tuple(value)
    if origin is dict:
        value_hint = typing.get_args(hint)[1] if typing.get_args(hint) else Any
        return {key: _typed(value_hint, item, f"{source}.{key}") for key, item in value.items()}
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


@dataclass(frozen=True)
class ConvertSettings(_Settings):
    """How one raw download is converted (config ``convert``; rules convert_clinica, convert_nacc).

    Attributes:
        converter: the converter executable (Clinica for ADNI / AIBL, dcm2niix for NACC), or None
            for the default one (see the convert schema).
        t1_series: regular expression (case-insensitive) for what a T1 series is called.
    """

    kind: ClassVar[str] = "convert"

    converter: str | None
    t1_series: str


@dataclass(frozen=True)
class SyntheticCohortSettings(_Settings):
    """What one synthetic cohort's files are generated from (config ``synthetic``,
    workflow/schemas/synthetic.schema.yaml, and the cohort's ``format``; rule synthesize_cohort).

    Attributes:
        format: the cohort's native layout ("adni", "aibl" or "nacc"): file layout and priors.
        seed: seed of every random draw (with the cohort's name).
        subjects: the cohort's number of subjects (``synthetic.subjects`` resolved for the cohort).
        min_subjects_per_class: each baseline diagnosis raised to at least this many subjects.
        voxel_size_mm: isotropic voxel size of the volumes.
        mri_sessions_share: shares of subjects with 1, 2, 3, ... scheduled MRI sessions.
        follow_up_years: (min, max) clinical follow-up per subject, in years.
        unscheduled_mri_share: share of ADNI / AIBL subjects with one extra unscheduled MRI session.
        unmatched_mri_share: share of subjects with one extra MRI session far from every visit.
        unlabelled_visit_share: share of follow-up visits without a usable diagnosis.
    """

    kind: ClassVar[str] = "synthetic cohort"

    format: str
    seed: int
    subjects: int
    min_subjects_per_class: int
    voxel_size_mm: float
    mri_sessions_share: tuple[float, ...]
    follow_up_years: tuple[float, float]
    unscheduled_mri_share: float
    unmatched_mri_share: float
    unlabelled_visit_share: float


@dataclass(frozen=True)
class IntakeSettings(_Settings):
    """How one cohort's native files are read (config ``cohorts.<name>``; checkpoint intake_cohort).

    Attributes:
        format: the cohort's native layout ("adni", "aibl" or "nacc"), which selects the reader.
        files: the cohort's file-name patterns (``cohorts.<name>.files``; a missing key takes its
            default), or None for the defaults.
        subject_prefix: what starts every subject label; None = the format's default
            (``workflow.intake.DEFAULT_SUBJECT_PREFIX``).
    """

    kind: ClassVar[str] = "intake"

    format: str
    files: dict[str, str] | None
    subject_prefix: str | None


@dataclass(frozen=True)
class HeaderEmbeddingSettings(_Settings):
    """How the header vectors of one text encoder are made (config ``headers``; rule embed_headers).

    Attributes:
        encoder: the encoder's short name (a key of ``headers.encoders``).
        path: its local model folder, or ``package:<module>`` for one shipped in a wheel.
        pooling: "mean" (masked mean of the last layer) or "cls".
        max_length: tokens per header text.
        stamp: sizes and modification times of the encoder's files, so an encoder replaced in
            place reruns the rule.
        batch_size: header texts per encoder pass.
        cache_dir: folder of the vectors per encoder identity (reruns embed only new texts).
    """

    kind: ClassVar[str] = "header embedding"

    encoder: str
    path: str
    pooling: str
    max_length: int
    stamp: str
    batch_size: int
    cache_dir: str


# --- preprocessing: one type per step, so that each rule's params hold exactly its step's settings ---


@dataclass(frozen=True)
class InputCheckSettings(_Settings):
    """The checks of a native T1 before any processing (config ``preprocess.check``).

    Attributes:
        voxel_size_range_mm: plausible [min, max] voxel edge in mm.
        min_axis_voxels: fewer voxels than this along any axis means a 2-D or degenerate image.
    """

    kind: ClassVar[str] = "input check"

    voxel_size_range_mm: tuple[float, float]
    min_axis_voxels: int


@dataclass(frozen=True)
class TemplateSettings(_Settings):
    """The registration target (config ``preprocess.template`` and ``voxel_size_mm``).

    Attributes:
        template: the user's MNI152NLin2009cSym head (full fidelity), or None for nilearn's
            brain-only stand-in on the same grid.
        voxel_size_mm: isotropic working voxel size (1 mm in the paper).
    """

    kind: ClassVar[str] = "template"

    template: str | None
    voxel_size_mm: float


@dataclass(frozen=True)
class N4Settings(_Settings):
    """N4 bias field correction (config ``preprocess.n4``; Clinica's but for the shrink factor).

    Attributes:
        spline_distance_mm: B-spline fitting distance (Clinica: 200 mm).
        shrink_factor: N4 fits on the image shrunk by this factor (ANTs' default: 4).
        iterations: iterations per fitting level. tolerance: convergence threshold.
        compressed: write the corrected image and bias field gzipped (``.nii.gz``) or not
            (``.nii``): the config's ``keep_intermediates``. Kept, they are worth the disk they
            save (tens of GB at the paper's size); deleted after registration, gzip only costs
            time (about 0.5 s per image at 2 mm).
    """

    kind: ClassVar[str] = "n4"

    spline_distance_mm: float
    shrink_factor: int
    iterations: tuple[int, ...]
    tolerance: float
    compressed: bool


@dataclass(frozen=True)
class LinearStage(_Settings):
    """One stage of a custom linear registration (config ``preprocess.registration.stages``): what
    an ANTs preset fixes, made a setting. Mutual information (32 bins) on a regular voxel sample,
    gradient step 0.1, convergence window 10 at 1e-6, as antsRegistrationSyNQuick's stages.

    Attributes:
        transform: "Rigid" or "Affine".
        iterations: iterations per pyramid level, coarsest first.
        shrink_factors: downsampling factor of each level.
        smoothing_sigmas_vox: Gaussian smoothing of each level, in voxels.
        sampling_rate: share of the fixed image's voxels the metric samples (the preset's: 0.25).
    """

    kind: ClassVar[str] = "registration stage"

    transform: str
    iterations: tuple[int, ...]
    shrink_factors: tuple[int, ...]
    smoothing_sigmas_vox: tuple[float, ...]
    sampling_rate: float

    def __post_init__(self) -> None:
        if self.transform not in ("Rigid", "Affine"):
            raise SettingsError(f"registration stage transform must be Rigid or Affine, got {self.transform!r}")
        levels = {len(self.iterations), len(self.shrink_factors), len(self.smoothing_sigmas_vox)}
        if len(levels) != 1:
            raise SettingsError(f"registration stage {self.transform}: iterations {list(self.iterations)}, "
                                f"shrink_factors {list(self.shrink_factors)} and smoothing_sigmas_vox "
                                f"{list(self.smoothing_sigmas_vox)} must have one entry per level each")
        if not 0 < self.sampling_rate <= 1:
            raise SettingsError(f"registration stage {self.transform}: sampling_rate must be in (0, 1], "
                                f"got {self.sampling_rate}")


@dataclass(frozen=True)
class RegistrationSettings(_Settings):
    """Affine registration to the template and Clinica's crop (config ``preprocess.registration``,
    plus the working voxel size and the seed).

    Attributes:
        voxel_size_mm: working grid of the crop.
        seed: ANTs seed of the first attempt (at least 1); attempt k uses seed + k.
        type_of_transform: antspyx preset (Clinica's: antsRegistrationSyNQuick[a]); None when
            ``stages`` is set.
        stages: custom linear stages instead of a preset (the last one Affine); None for the preset.
        attempts: at most this many registrations; another runs while the best NCC with the
            template is below ``retry_below_ncc``.
        fit_voxel_size_mm: the first attempt fits on copies at this voxel size; None fits at the
            working grid, as Clinica does.
    """

    kind: ClassVar[str] = "registration"

    voxel_size_mm: float
    seed: int
    type_of_transform: str | None
    stages: tuple[LinearStage, ...] | None
    attempts: int
    retry_below_ncc: float
    fit_voxel_size_mm: float | None

    def __post_init__(self) -> None:
        if (self.type_of_transform is None) == (self.stages is None):
            raise SettingsError("preprocess.registration: set exactly one of type_of_transform (an ANTs preset) "
                                f"and stages (custom linear stages), got type_of_transform "
                                f"{self.type_of_transform!r} and stages {self.stages!r}")
        if self.stages is not None and (not self.stages or self.stages[-1].transform != "Affine"):
            raise SettingsError("preprocess.registration.stages: the last stage must be Affine (an affine "
                                f"registration), got {[stage.transform for stage in self.stages]}")

    @property
    def method(self) -> str:
        """The preset's name, or each stage's transform, iterations per level and sampling rate
        (``Rigid(1000x500@0.1)+Affine(...)``), for logs and benchmark lines."""
        if self.type_of_transform is not None:
            return self.type_of_transform
        return "+".join(f"{stage.transform}({'x'.join(map(str, stage.iterations))}@{stage.sampling_rate:g})"
                        for stage in self.stages)


@dataclass(frozen=True)
class SkullstripSettings(_Settings):
    """Skull stripping of the registered crop (config ``preprocess.skullstrip``).

    Attributes:
        method: "deepbet" (weights in its wheel) or "synthstrip" (the paper's; needs
            ``synthstrip_model``). device: "cpu" or "cuda".
        deepbet_model_dir: folder of deepbet's weights; None = the wheel's copy.
        deepbet_shape: the grid deepbet's second network sees the brain's bounding box on (its
            own: 256^3).
        synthstrip_model, synthstrip_sha256: FreeSurfer's synthstrip.1.pt and its optional checksum.
        border_mm, conform_voxel_mm, shape_limits: SynthStrip's mask border, input voxel size and
            input axis limits (FreeSurfer's: 1 mm, 1 mm, (192, 320)).
    """

    kind: ClassVar[str] = "skull strip"

    method: str
    device: str
    deepbet_model_dir: str | None
    deepbet_shape: tuple[int, int, int]
    synthstrip_model: str | None
    synthstrip_sha256: str | None
    border_mm: float
    conform_voxel_mm: float
    shape_limits: tuple[int, int]


@dataclass(frozen=True)
class ModelReadySettings(_Settings):
    """The array the model loads (config ``preprocess.model_ready`` and ``pretrain.image_shape``).

    Attributes:
        shape: the model input (X, Y, Z) the stripped crop is resampled to.
        dtype: storage type, "float16" (in [0, 1]) or "uint8" (in [0, 255]).
    """

    kind: ClassVar[str] = "model-ready"

    shape: tuple[int, int, int]
    dtype: str


@dataclass(frozen=True)
class QcThresholds(_Settings):
    """QC thresholds; an image failing any is excluded with the reason (config ``preprocess.qc``).

    Attributes:
        min_ncc: least NCC with the template inside its brain mask.
        brain_volume_ml: plausible [min, max] native brain volume of the mask.
        max_pose_error_mm, min_dice: against the ground truth (synthetic data only).
    """

    kind: ClassVar[str] = "qc"

    min_ncc: float
    brain_volume_ml: tuple[float, float]
    max_pose_error_mm: float
    min_dice: float


@dataclass(frozen=True)
class PreprocessSettings(_Settings):
    """Every preprocessing step's settings: what a bundle records and prediction repeats.

    Attributes:
        check, template, n4, registration, skullstrip, model_ready, qc: each step's.
        threads: threads of the per-image steps. A runtime value for the rules (their
            ``threads:``), but recorded: ITK's floating-point sums depend on it.
    """

    kind: ClassVar[str] = "preprocess"

    check: InputCheckSettings
    template: TemplateSettings
    n4: N4Settings
    registration: RegistrationSettings
    skullstrip: SkullstripSettings
    model_ready: ModelReadySettings
    qc: QcThresholds
    threads: int


# --- report: result tables and figures ---------------------------------------------------------------

INTERVALS = ("sd", "bootstrap95")


@dataclass(frozen=True)
class Uncertainty(_Settings):
    """What each table cell carries besides its mean, and how rows are tested (config ``report``).

    Attributes:
        interval: "sd" (± SD over seeds) or "bootstrap95" (95 % bootstrap interval over test subjects).
        resamples / bootstrap_seed: the bootstrap's resample count and seed.
        permutations / test_seed: the paired test's permutation count and seed.
        alpha: cells whose paired test gives p < alpha are marked.
    """

    kind: ClassVar[str] = "uncertainty"

    interval: str = "sd"
    resamples: int = 2000
    bootstrap_seed: int = 0
    permutations: int = 10000
    test_seed: int = 0
    alpha: float = 0.05

    @classmethod
    def from_config(cls, report: dict) -> "Uncertainty":
        """From the validated ``report`` config section."""
        return cls(interval=report["interval"], resamples=report["bootstrap"]["resamples"],
                   bootstrap_seed=report["bootstrap"]["seed"], permutations=report["paired_test"]["permutations"],
                   test_seed=report["paired_test"]["seed"], alpha=report["paired_test"]["alpha"])

    def __post_init__(self) -> None:
        if self.interval not in INTERVALS:
            raise SettingsError(f"interval must be one of {INTERVALS}, got {self.interval!r}")


@dataclass(frozen=True)
class ResultTableSettings(_Settings):
    """How one result table (Table 1, 2 or 3) is made from the evaluations (config ``report``;
    built by ``workflow.paper.result_table_settings``).

    Attributes:
        table_name, caption, latex_label: how the table names itself (logs, notes, LaTeX).
        variants: the rows in order, rows that could not run included.
        cohorts: the column groups in order.
        method_names: display name per variant (the variant's own name where absent).
        decimals: digits after the decimal point.
        uncertainty: what each cell carries besides its mean, and the paired tests' settings.
        majority_row: add the "Majority class" row (Table 1).
        average_column: add the column group averaging each metric over the cohorts (Table 3).
        unavailable: rows that could not run -> the reason their cells show.
        reference: the row every other row is paired-tested against; None: no tests (Table 1).
    """

    kind: ClassVar[str] = "result table"

    table_name: str
    caption: str
    latex_label: str
    variants: tuple[str, ...]
    cohorts: tuple[str, ...]
    method_names: dict[str, str]
    decimals: int
    uncertainty: Uncertainty = Uncertainty()
    majority_row: bool = False
    average_column: bool = False
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)
    reference: str | None = None


@dataclass(frozen=True)
class HeaderSimilarityTableSettings(_Settings):
    """The header-similarity table of Table 2's encoders (config ``headers`` and ``report``).

    Attributes:
        encoders: the encoders the configured tables use, in order (the paper's others follow).
        similarity_files: encoder -> its similarity report, for the encoders that are supplied.
        unavailable: encoder -> why it has no header bank ("encoder not supplied").
        decimals: digits after the decimal point.
    """

    kind: ClassVar[str] = "header similarity table"

    encoders: tuple[str, ...]
    similarity_files: dict[str, str]
    unavailable: dict[str, str]
    decimals: int


@dataclass(frozen=True)
class FigureRun(_Settings):
    """The fine-tuned run a figure shows (``report.figures``: variant, weights_cohort, weights_seed).

    Attributes:
        weights: its fine-tuned weights file.
        variant, cohort, seed: the row, the cohort it was fine-tuned on and its seed.
        header_bank: the header bank it was trained on.
        evaluate: how its model is built and fed (the evaluate settings of its variant).
    """

    kind: ClassVar[str] = "figure run"

    weights: str
    variant: str
    cohort: str
    seed: int
    header_bank: str
    evaluate: EvaluateSettings

    def describe(self) -> str:
        return f"{self.variant} fine-tuned on {self.cohort} (seed {self.seed}): {self.weights}"


@dataclass(frozen=True)
class Figure3Settings(_Settings):
    """Figure 3, expert activation (config ``report.figures``).

    Attributes:
        run: the fine-tuned run shown. encoder: its header encoder's name.
        cohort_tables: cohort -> (table.tsv, columns.yaml), in the figure's order.
        feature_cohort: the cohort of panel (a); shared_feature: the column of panel (b).
        layer: 0-based P-MoLin layer. split, max_rows, seed: which rows, and the sample's seed.
        dpi: of the PNG.
    """

    kind: ClassVar[str] = "figure 3"

    run: FigureRun
    encoder: str
    cohort_tables: dict[str, tuple[str, str]]
    feature_cohort: str
    shared_feature: str
    layer: int
    split: str
    max_rows: int
    seed: int
    dpi: int


@dataclass(frozen=True)
class Figure4Settings(_Settings):
    """Figure 4, t-SNE of one cohort's feature tokens with the P-MoLin prototypes.

    Attributes:
        run, encoder, layer, split, max_rows, seed, dpi: as in :class:`Figure3Settings`.
        cohort: whose feature tokens are embedded.
        perplexity: of the t-SNE (capped by the number of points).
    """

    kind: ClassVar[str] = "figure 4"

    run: FigureRun
    encoder: str
    cohort: str
    layer: int
    split: str
    max_rows: int
    perplexity: float
    seed: int
    dpi: int


@dataclass(frozen=True)
class Figure5Settings(_Settings):
    """Figure 5, t-SNE of the fused CLS of every cohort, one panel per run.

    Attributes:
        panels: panel title -> the run it shows (CITab, w/o header embedding).
        encoder, cohort_tables, split, max_rows, seed, dpi: as in :class:`Figure3Settings`.
        class_names: diagnosis names in label order (the markers).
        perplexity: of the t-SNE.
    """

    kind: ClassVar[str] = "figure 5"

    panels: dict[str, FigureRun]
    encoder: str
    cohort_tables: dict[str, tuple[str, str]]
    class_names: tuple[str, ...]
    split: str
    max_rows: int
    perplexity: float
    seed: int
    dpi: int


# The settings a job reads from a file (training jobs, and the per-image preprocessing steps).
SETTINGS_TYPES: dict[str, type[_Settings]] = {
    cls.kind: cls for cls in (TablesSettings, PretrainSettings, FinetuneSettings, EvaluateSettings,
                              N4Settings, RegistrationSettings, SkullstripSettings, ModelReadySettings)
}
# Fields of PreprocessSettings whose step runs once per image, reading its settings from a file.
PER_IMAGE_STEPS = ("n4", "registration", "skullstrip", "model_ready")
# Config keys of the convert section: the two executables (one per rule), and runtime values.
CONVERT_OTHER_KEYS = ("clinica", "dcm2niix", "threads", "mem_mb")
# Config keys of the preprocess section that are runtime values or inputs, not what a step computes.
PREPROCESS_OTHER_KEYS = ("keep_intermediates", "mem_mb", "voxel_size_mm", "random_seed", "images_per_job")
# Keys of preprocess.check that cut the images into jobs, not what a check computes.
CHECK_PLAN_KEYS = ("images_per_job",)
# Config keys of the synthetic section that say how a job runs, not what it writes.
SYNTHETIC_RUN_KEYS = ("threads", "mem_mb")
# Keys of a cohort's config entry that say where its files are or how they are made, not how intake
# reads them.
COHORT_OTHER_KEYS = ("source", "root", "xml_path")


# --- config -> settings ---------------------------------------------------------------------------


def tables_settings(config: dict) -> TablesSettings:
    """The tables stage's settings (the same for every cohort)."""
    section = config["tables"]
    check_known(section, TablesSettings, TABLES_INPUT_KEYS, "tables")
    values = {name: section[name] for name in field_names(TablesSettings)}
    return TablesSettings.from_params(plain(values), source="tables settings")


def convert_settings(config: dict, converter: str) -> ConvertSettings:
    """The settings of a conversion with ``converter`` ("clinica" or "dcm2niix"): only that
    converter's executable, so a changed Clinica path reruns no NACC conversion."""
    section = config["convert"]
    check_known(section, ConvertSettings, CONVERT_OTHER_KEYS, "convert")
    return ConvertSettings.from_params(plain({"converter": section[converter], "t1_series": section["t1_series"]}),
                                       source=f"convert settings ({converter})")


def synthetic_cohort_settings(config: dict, cohort: str) -> SyntheticCohortSettings:
    """The settings that determine synthetic ``cohort``'s files: the ``synthetic`` section without
    its runtime keys (threads, memory), ``subjects`` resolved to this cohort's number, and the
    cohort's format; so changing one cohort's size or a runtime key reruns nothing else."""
    section = config["synthetic"]
    check_known(section, SyntheticCohortSettings, SYNTHETIC_RUN_KEYS, "synthetic", elsewhere=("format",))
    values = {key: value for key, value in section.items() if key not in SYNTHETIC_RUN_KEYS}
    values["subjects"] = synthetic_subjects(section, cohort)
    values["format"] = config["cohorts"][cohort]["format"]
    return SyntheticCohortSettings.from_params(plain(values), source=f"synthetic settings ({cohort})")


def synthetic_subjects(section: dict, cohort: str) -> int:
    """Subjects of ``cohort``: ``synthetic.subjects`` is one number or a per-cohort mapping."""
    subjects = section["subjects"]
    if isinstance(subjects, dict):
        if cohort not in subjects:
            raise SettingsError(f"config synthetic.subjects has no entry for cohort {cohort!r} "
                                f"(has {sorted(subjects)})")
        return int(subjects[cohort])
    return int(subjects)


def intake_settings(config: dict, cohort: str) -> IntakeSettings:
    """How intake reads ``cohort``: its format, file-name patterns and subject prefix (None when unset)."""
    entry = config["cohorts"][cohort]
    check_known(entry, IntakeSettings, COHORT_OTHER_KEYS, f"cohorts.{cohort}")
    values = {"format": entry["format"], "files": entry.get("files"), "subject_prefix": entry.get("subject_prefix")}
    return IntakeSettings.from_params(plain(values), source=f"intake settings ({cohort})")


def preprocess_settings(config: dict) -> PreprocessSettings:
    """Every preprocessing step's settings from the validated config (one object per step)."""
    section = config["preprocess"]
    check_known(section, PreprocessSettings, PREPROCESS_OTHER_KEYS, "preprocess")
    values = {
        "check": {key: value for key, value in section["check"].items() if key not in CHECK_PLAN_KEYS},
        "template": {"template": section["template"], "voxel_size_mm": section["voxel_size_mm"]},
        "n4": {**section["n4"], "compressed": section["keep_intermediates"]},
        "registration": {**section["registration"], "voxel_size_mm": section["voxel_size_mm"],
                         "seed": section["random_seed"]},
        "skullstrip": section["skullstrip"],
        "model_ready": {**section["model_ready"], "shape": config["pretrain"]["image_shape"]},
        "qc": section["qc"],
        "threads": section["threads"],
    }
    return PreprocessSettings.from_params(plain(values), source="preprocess settings")


def check_known(section: dict, cls: type[_Settings], other_keys: tuple[str, ...], name: str,
                elsewhere: tuple[str, ...] = ()) -> None:
    """A config key that no settings field and no runtime or plan key takes would be silently
    ignored: a schema key added without its field here. ``elsewhere``: fields whose value comes
    from another part of the config, so the section may not hold them."""
    unknown = sorted(set(section) - (set(field_names(cls)) - set(elsewhere)) - set(other_keys))
    if unknown:
        raise SettingsError(f"config section {name!r} has keys {unknown} that {cls.__name__} does not carry")


def field_names(cls: type[_Settings]) -> list[str]:
    return [field.name for field in dataclasses.fields(cls)]


def per_cohort(values: dict, cohort: str) -> float:
    return float(values.get(cohort, values["default"]))


def plain(values: dict) -> dict:
    return json.loads(json.dumps(values))


def write_settings(kind: str, values: dict[str, Any], path: str | Path, log_path: str | Path) -> None:
    """Write a job's settings file from its rule's params (``kind``: a key of
    :data:`SETTINGS_TYPES`), checked against its type; ``log_path`` gets one line naming the file."""
    settings = SETTINGS_TYPES[kind].from_params(values, source=f"params of {path}")
    settings.write(path)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    Path(log_path).write_text(f"wrote {kind} settings to {path}\n")
