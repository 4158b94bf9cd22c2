"""Model bundles: one fine-tuned model with everything needed to use it on new subjects.

A bundle is one folder per fine-tuned (variant, cohort, seed) (``paths.BUNDLE_DIR``; layout in
docs/interfaces.md section 7). ``workflow.predict`` loads it without the pipeline's ``results/``
tree and without downloading anything: the weights and the header vectors the model was trained
on (safetensors), the cohort's column definitions (YAML: native sources, codes, missing codes,
header texts), the normalisation statistics and category codes of the training split (JSON), the
registration target at the working grid (NIfTI), and ``bundle.json``: the preprocessing settings
that made the training volumes, the model settings, class names, validation and test metrics, the
settings hash and the sha256 of every other file. Nothing in a bundle is a pickle.

``export_bundle`` writes one (rule ``export_bundle``); ``load_bundle`` reads and checks one.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import shutil
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path

import yaml

from model.hashing import fingerprint
from workflow.settings import PreprocessSettings

log = logging.getLogger(__name__)

# Raised when a bundle's layout changes in a way an older reader would misread.
BUNDLE_FORMAT = 3  # 3: preprocessing settings per step (workflow.settings.PreprocessSettings)
# The files of a bundle, by role; bundle.json (the manifest) is written last, so a folder with a
# manifest is a complete bundle.
BUNDLE_FILES = {
    "manifest": "bundle.json",
    "weights": "model.safetensors",
    "header_bank": "headers.safetensors",
    "columns": "columns.yaml",
    "stats": "stats.json",
    "template_head": "template/head_T1w.nii.gz",
    "template_crop": "template/crop_T1w.nii.gz",
    "template_brainmask": "template/crop_brainmask.nii.gz",
}


class BundleError(ValueError):
    """A bundle is incomplete, damaged or cannot serve a request (the message names the file)."""


# --- config -> rule params (called by rules/bundle.smk) --------------------------------------------


def bundle_outputs() -> dict[str, str]:
    """The output files of rule ``export_bundle``, by role (wildcards variant, cohort, seed)."""
    from workflow import paths

    return {role: f"{paths.BUNDLE_DIR}/{name}" for role, name in BUNDLE_FILES.items()}


# --- writing --------------------------------------------------------------------------------------


def export_bundle(
    variant: str, cohort: str, seed: int, weights: str, finetune_metrics: str, eval_metrics: str,
    column_definitions: str, table_columns: str, stats: str, header_bank: str, template: dict[str, str],
    model_settings: dict, finetune_settings: dict, preprocess_settings: dict, tables_settings: dict,
    encoder: str, outputs: dict[str, str],
) -> dict:
    """Write the bundle of one fine-tuned (variant, cohort, seed) into the files of ``outputs``.

    Args:
        weights: the best fine-tuned weights (``paths.FINETUNED_WEIGHTS``).
        finetune_metrics / eval_metrics: the fine-tuning run's per-epoch CSV and the test metrics JSON.
        column_definitions: the column definitions file (``tables.columns``); the cohort's entry and
            the crosswalks it names are copied.
        table_columns / stats: the cohort's ``columns.yaml`` and ``stats.json`` from the tables stage.
        header_bank: the header bank the model was fine-tuned on.
        template: ``head``, ``crop``, ``brainmask``: the registration target the volumes were made with.
        model_settings: what evaluation built the model from (``workflow.settings.EvaluateSettings.as_params()``).
        finetune_settings / preprocess_settings / tables_settings: the settings of the run (recorded,
            and hashed into ``settings_hash``).
        encoder: the configured header encoder (``headers.encoder``).
        outputs: ``bundle_outputs()`` filled in.
    Returns:
        The manifest written to ``outputs["manifest"]``.
    """
    from model.header_bank import load_header_bank
    from model.checkpoints import load_weights
    from workflow.provenance import file_sha256
    from workflow.train import load_checked_header_bank

    folder = Path(outputs["manifest"]).parent
    folder.mkdir(parents=True, exist_ok=True)
    load_checked_header_bank(header_bank, encoder)  # a bank of another encoder must not be bundled
    _, weights_metadata = load_weights(weights, "fine-tuned weights")
    definitions = _cohort_definitions(column_definitions, cohort)
    _check_same_columns(definitions, table_columns, column_definitions, cohort)

    shutil.copyfile(weights, outputs["weights"])
    shutil.copyfile(header_bank, outputs["header_bank"])
    shutil.copyfile(stats, outputs["stats"])
    Path(outputs["columns"]).write_text(
        "# The column definitions this model was trained with (docs/interfaces.md section 2):\n"
        "# native sources, codes and header texts of one cohort, in the format of config/columns.yaml.\n"
        + yaml.safe_dump(definitions, sort_keys=False))
    for role in ("head", "crop", "brainmask"):
        Path(outputs[f"template_{role}"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template[role], outputs[f"template_{role}"])

    bank = load_header_bank(header_bank)
    test = json.loads(Path(eval_metrics).read_text())
    best_epoch = int(weights_metadata.get("best_epoch", test.get("best_epoch", 0)))
    recorded = {"finetune": finetune_settings, "model": model_settings, "preprocess": preprocess_settings,
                "tables": tables_settings, "encoder": encoder}
    manifest = {
        "format": BUNDLE_FORMAT,
        "variant": variant, "cohort": cohort, "seed": int(seed),
        "class_names": list(model_settings["class_names"]),
        "encoder": {"name": encoder, **{key: bank.metadata.get(key) for key in ("encoder_sha256", "pooling", "max_length", "dim")}},
        "model": model_settings,
        "preprocess": {**preprocess_settings, "skullstrip_software": _skullstrip_software(preprocess_settings)},
        "tables": tables_settings,
        "finetune": finetune_settings,
        "metrics": {"best_epoch": best_epoch, "validation": _validation_metrics(finetune_metrics, best_epoch),
                    "test": test},
        # One hash of every setting that decides this model's outputs: two bundles with the same
        # hash were made the same way (inputs aside: see `inputs`).
        "settings_hash": fingerprint(recorded),
        "inputs": {"weights": file_sha256(weights), "header_bank": file_sha256(header_bank),
                   "stats": file_sha256(stats), "column_definitions": file_sha256(column_definitions)},
        "files": {name: file_sha256(folder / name) for role, name in BUNDLE_FILES.items() if role != "manifest"},
    }
    temporary = Path(outputs["manifest"]).with_suffix(".json.partial")
    temporary.write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
    temporary.replace(outputs["manifest"])
    log.info("bundle of %s %s seed %s written to %s (settings hash %s)", variant, cohort, seed, folder,
             manifest["settings_hash"])
    return manifest


def _cohort_definitions(path: str, cohort: str) -> dict:
    """The cohort's raw entry of the column definitions file and the crosswalks it uses, loadable by
    ``workflow.columns`` as a column definitions file of its own (checked here by loading it so)."""
    from workflow.columns import cohort_spec

    cohort_spec(path, cohort)  # the same checks training had
    document = yaml.safe_load(Path(path).read_text())
    entry = document["cohorts"][cohort]
    used = {column["fallback"]["crosswalk"] for column in entry["columns"]
            if isinstance(column.get("fallback"), dict) and column["fallback"].get("crosswalk")}
    crosswalks = {name: table for name, table in (document.get("crosswalks") or {}).items() if name in used}
    return {"crosswalks": crosswalks, "cohorts": {cohort: entry}}


def _check_same_columns(definitions: dict, table_columns: str, column_definitions: str, cohort: str) -> None:
    """The definitions must describe the columns the table (and so the model) was built with."""
    with open(table_columns) as stream:
        trained = [(c["name"], c["header"]) for c in yaml.safe_load(stream)["columns"]]
    defined = [(c["name"], str(c["header"]).strip()) for c in definitions["cohorts"][cohort]["columns"]]
    if trained != defined:
        raise BundleError(f"{column_definitions}: the columns of cohort {cohort} differ from those the model was "
                          f"trained with ({table_columns}); rerun build_table and training first")


def _validation_metrics(finetune_metrics: str, best_epoch: int) -> dict:
    """The validation metrics of the kept (best) epoch, from the fine-tuning run's per-epoch CSV."""
    with open(finetune_metrics, newline="") as stream:
        for row in csv.DictReader(stream):
            if int(row["epoch"]) == best_epoch:
                # NaN (an AUC no class could be scored for) becomes null: bundle.json stays strict JSON
                return {key[len("val_"):]: None if value in ("", None) or math.isnan(float(value)) else float(value)
                        for key, value in row.items() if key.startswith("val_")}
    return {}


def _skullstrip_software(settings: dict) -> dict:
    """Which skull stripper made the masks: the deepbet package version, or the SynthStrip model file."""
    from workflow.provenance import file_sha256

    strip = settings["skullstrip"]
    if strip["method"] == "deepbet":
        return {"deepbet": package_metadata.version("deepbet")}
    model = strip["synthstrip_model"]
    return {"synthstrip_model": model, "synthstrip_sha256": file_sha256(model)}


# --- reading --------------------------------------------------------------------------------------


@dataclass
class Bundle:
    """A checked bundle folder (see :func:`load_bundle`)."""

    folder: Path
    manifest: dict

    def path(self, role: str) -> Path:
        """The file of ``role`` (a key of :data:`BUNDLE_FILES`)."""
        return self.folder / BUNDLE_FILES[role]

    @property
    def cohort(self) -> str:
        return self.manifest["cohort"]

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def encoder(self) -> str:
        return self.manifest["encoder"]["name"]

    @functools.cached_property
    def preprocess(self) -> PreprocessSettings:
        """The preprocessing settings that made the training volumes (what prediction repeats)."""
        recorded = {key: value for key, value in self.manifest["preprocess"].items() if key != "skullstrip_software"}
        return PreprocessSettings.from_params(recorded, source=f"{self.folder}: preprocess")

    @property
    def skullstrip_software(self) -> dict:
        """Which skull stripper made the training masks (deepbet's version, or the SynthStrip file and hash)."""
        return self.manifest["preprocess"]["skullstrip_software"]

    @property
    def model_settings(self) -> dict:
        return self.manifest["model"]

    def stats(self) -> dict:
        return json.loads(self.path("stats").read_text())

    def columns(self) -> list[dict]:
        """The cohort's column definitions, loaded and checked by ``workflow.columns`` as training's were."""
        from workflow.columns import cohort_columns

        return cohort_columns(self.path("columns"), self.cohort)

    def crosswalks(self) -> dict:
        from workflow.columns import load_columns

        return load_columns(self.path("columns"))["crosswalks"]


def load_bundle(folder: str | Path) -> Bundle:
    """Open the bundle in ``folder``: manifest present and of a known format, every file present and
    unchanged (sha256 as recorded). Reads JSON only; tensors are read later, from safetensors.

    Raises:
        BundleError: naming the folder or file and what is wrong.
    """
    from workflow.provenance import file_sha256

    folder = Path(folder)
    manifest_path = folder / BUNDLE_FILES["manifest"]
    if not manifest_path.is_file():
        raise BundleError(f"{folder}: not a model bundle (no {BUNDLE_FILES['manifest']}); bundles are written by the "
                          "rule export_bundle under results/bundles/<variant>/<cohort>/seed-<seed>/")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{manifest_path}: cannot be read as JSON ({error})") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path}: bundle format {manifest.get('format')!r}, this code reads format "
                          f"{BUNDLE_FORMAT}; export the bundle again with this version")
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle (copy the whole folder {folder})")
        if file_sha256(path) != expected:
            raise BundleError(f"{path}: changed since the bundle was written (sha256 differs from {manifest_path}); "
                              "copy the bundle again")
    return Bundle(folder=folder, manifest=manifest)
