"""Predict: new subjects (T1 NIfTI + clinical rows) through a model bundle (``workflow.bundle``).

    python -m workflow.predict --bundle DIR --images FOLDER_OR_TSV --table CSV --out DIR [--encoder NAME]

Each new image goes through the preprocessing chain that made the training volumes, with the
bundle's settings and registration target: the same functions the preprocess rules call (input
check, N4, affine registration + crop, skull strip, model-ready volume, image QC and its
thresholds). Each clinical row is harmonised by intake's own cell reader (native columns) or read
as harmonised values, then encoded by the tables stage's ``encode`` with the training split's
statistics. The model is built by ``workflow.train.build`` (``model.registry.build_model``) and
run by ``model.training.predict`` on an ``ImageTableDataset``, as evaluation does.

Outputs (docs/interfaces.md section 7): ``paths.PREDICTIONS`` (per predicted subject: class
probabilities and predicted class), ``paths.PREDICT_QC`` (one row per subject met in the images or
the table: predicted or why not, registration NCC, brain volume, columns missing) and the
intermediates under ``paths.PREDICT_WORK_DIR``.

Refused outright (:class:`PredictError`, exit code 1): a damaged bundle, a bundle of another header
encoder than ``--encoder``, a table whose columns are not the bundle cohort's. Refused per subject
(others go on): an image that fails the input checks, preprocessing or QC; a row with an unknown
category code or an unreadable cell; a subject without an image or without a row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from workflow import paths

log = logging.getLogger(__name__)

# A new image without a session label in its name or row gets this one (file names need one).
DEFAULT_SESSION = "new"
NIFTI_SUFFIXES = (".nii.gz", ".nii")
# A BIDS-style image name: sub-<label>[_ses-<label>][_<anything>].nii[.gz]
BIDS_IMAGE_NAME = re.compile(r"sub-([A-Za-z0-9]+)(?:_ses-([A-Za-z0-9]+))?(?:_.*)?")
LABEL = re.compile(r"[A-Za-z0-9]+")
# The column of a native-column table that dates the visit (needed by age_from_birth_year columns).
VISIT_DATE_COLUMN = "visit_date"
PREDICTION_KEY_COLUMNS = ["cohort", "subject", "session", "prediction", "prediction_name"]
QC_COLUMNS = ["cohort", "subject", "session", "predicted", "reason", "image", "table_row", "ncc_template",
              "brain_volume_ml", "columns_missing"]


class PredictError(ValueError):
    """The request cannot be served at all (the message names the file, row or column)."""


# --- new images -----------------------------------------------------------------------------------


def list_images(images: str | Path) -> pd.DataFrame:
    """The new T1 images: ``subject, session, path``.

    Args:
        images: a folder of NIfTI files named ``sub-<subject>[_ses-<session>][_...].nii[.gz]`` or
            ``<subject>.nii[.gz]``, or a TSV with columns ``subject, path`` (and optionally
            ``session``); relative paths in a TSV are relative to the working directory.
    Raises:
        PredictError: a name or label that is not letters and digits, an image listed twice.
    """
    from workflow.intake import read_text_table

    source = Path(images)
    if source.is_dir():
        rows = []
        for path in sorted(p for p in source.iterdir() if p.name.endswith(NIFTI_SUFFIXES)):
            stem = next(path.name[: -len(s)] for s in NIFTI_SUFFIXES if path.name.endswith(s))
            found = BIDS_IMAGE_NAME.fullmatch(stem)
            if found:
                rows.append({"subject": found.group(1), "session": found.group(2) or DEFAULT_SESSION, "path": str(path)})
            elif LABEL.fullmatch(stem):
                rows.append({"subject": stem, "session": DEFAULT_SESSION, "path": str(path)})
            else:
                raise PredictError(f"{path}: cannot tell the subject from the file name; name it "
                                   "sub-<subject>[_ses-<session>]_T1w.nii.gz or <subject>.nii.gz (letters and digits)")
        table = pd.DataFrame(rows, columns=["subject", "session", "path"])
        if table.empty:
            raise PredictError(f"{source}: no NIfTI file (*.nii, *.nii.gz) in this folder")
    else:
        table = read_text_table(source, "\t", "a TSV with columns subject, path (and optionally session)",
                                error=PredictError, dtype=str, keep_default_na=False)
        missing = [c for c in ("subject", "path") if c not in table.columns]
        if missing:
            raise PredictError(f"{source}: required column(s) {missing} not found (expected subject, path, session?)")
        if "session" not in table.columns:
            table["session"] = DEFAULT_SESSION
        table["session"] = table["session"].replace("", DEFAULT_SESSION)
        for line, (subject, session) in enumerate(zip(table["subject"], table["session"]), start=2):
            for column, label in (("subject", subject), ("session", session)):
                if not LABEL.fullmatch(label):
                    raise PredictError(f"{source}: row {line}, column {column}: {label!r} is not a label of letters "
                                       "and digits (it names the subject's files)")
        table = table[["subject", "session", "path"]]
    twice = table[table.duplicated(["subject", "session"], keep=False)]
    if len(twice):
        raise PredictError(f"{source}: subject {twice['subject'].iloc[0]} session {twice['session'].iloc[0]} is listed "
                           f"more than once ({list(twice['path'])})")
    return table.reset_index(drop=True)


@dataclass
class ImageOutcome:
    """What the preprocessing chain made of one new image."""

    volume: str = ""  # the model-ready volume; empty when the image was left out
    reason: str = ""  # why it was left out ('' when it passed)
    ncc_template: float | None = None
    brain_volume_ml: float | None = None


def preprocess_image(bundle, subject: str, session: str, t1_path: str, work_dir: Path, threads: int,
                     device: str) -> ImageOutcome:
    """One new T1 through the chain that made the bundle's training volumes (rule order of
    rules/preprocess.smk, the same functions, the bundle's settings and template). A failing step
    is this image's reason, never the run's end."""
    from workflow.preprocess import bias_correct, check_t1, make_model_ready, register_to_template, session_files
    from workflow.preprocess_qc import failed_thresholds, image_qc
    from workflow.skullstrip import skull_strip

    settings = bundle.preprocess
    files = {key: work_dir / Path(pattern.format(cohort=bundle.cohort, subject=subject, session=session)).relative_to(paths.RESULTS)
             for key, pattern in session_files(settings.registration.voxel_size_mm).items()}
    verdict = check_t1(t1_path, files["check"], bundle.cohort, subject, session, settings.check)
    if not verdict["passed"]:
        return ImageOutcome(reason=f"input check: {verdict['reason']}")
    step = "N4"
    try:
        bias_correct(t1_path, files["n4"], files["bias"], settings.n4, threads)
        step = "registration"
        register_to_template(files["n4"], bundle.path("template_head"), bundle.path("template_brainmask"),
                             files["affine"], files["crop"], settings.registration, threads)
        step = "skull strip"
        # the SynthStrip model must be the file that made the training masks
        strip = dataclasses.replace(settings.skullstrip, device=device,
                                    synthstrip_sha256=bundle.skullstrip_software.get("synthstrip_sha256"))
        skull_strip(files["crop"], files["mask"], files["brain"], strip, threads)
        step = "model-ready volume"
        make_model_ready(files["crop"], files["mask"], files["volume"], files["volume_sidecar"], settings.model_ready)
        step = "QC"
        metrics = image_qc(bundle.cohort, subject, session, files["crop"], files["mask"], files["affine"],
                           bundle.path("template_crop"), bundle.path("template_brainmask"), "", "", files["qc"],
                           files["mosaic"], str(files["volume"]))
    except Exception as error:  # noqa: BLE001 -- one image's failure is its reason, the others go on
        log.exception("preprocessing of %s failed at %s", t1_path, step)
        return ImageOutcome(reason=f"preprocessing failed at {step}: {type(error).__name__}: {error}")
    outcome = ImageOutcome(ncc_template=metrics["ncc_template"], brain_volume_ml=metrics["brain_volume_ml"])
    failed = failed_thresholds(metrics, settings.qc)
    if failed:
        outcome.reason = "QC: " + "; ".join(failed)
    else:
        outcome.volume = str(files["volume"])
    return outcome


# --- new clinical rows ----------------------------------------------------------------------------


@dataclass
class ClinicalRow:
    """One row of the new clinical table, harmonised (or why it cannot be used)."""

    subject: str
    session: str  # '' when the table has no session column
    line: int  # line in the file (header = 1)
    values: dict[str, float] = field(default_factory=dict)  # column name -> harmonised value, NaN missing
    problem: str = ""


def native_columns(columns: list[dict]) -> list[str]:
    """The native columns a table in the cohort's native layout must have, in definition order."""
    needed = []
    for column in columns:
        needed += column["source"]
        if column["fallback"] is not None:
            needed.append(column["fallback"]["source"])
        if column["transform"] == "age_from_birth_year":
            needed.append(VISIT_DATE_COLUMN)
    return list(dict.fromkeys(needed))


def read_clinical_rows(table_path: str | Path, bundle) -> list[ClinicalRow]:
    """Every row of the new clinical CSV, harmonised as training's visits were.

    The CSV has a ``subject`` column (optionally ``session``, ``cohort``) and either the bundle's
    harmonised columns (the names of its column definitions; categorical cells as integer level
    code or level name) or the cohort's native columns (those the definitions read, plus
    ``visit_date`` (YYYY-MM-DD) where an age is computed from a birth year); other columns are
    ignored. Blank cells and null texts are missing values.

    Raises:
        PredictError: no ``subject`` column, or columns that fit neither layout of the bundle's
            cohort (say, the table of another cohort), naming the file and the columns.
    """
    from workflow.columns import normalise_code
    from workflow.intake import CellError, harmonise, is_blank, parse_number, read_text_table

    columns, crosswalks = bundle.columns(), bundle.crosswalks()
    table = read_text_table(table_path, ",", "a CSV with a subject column and the cohort's columns",
                            error=PredictError, dtype=str, keep_default_na=False)
    table.columns = [str(c).strip() for c in table.columns]
    if "subject" not in table.columns:
        raise PredictError(f"{table_path}: no 'subject' column (it pairs each row with its image)")
    names, native = [c["name"] for c in columns], native_columns(columns)
    present = set(table.columns)
    if set(names) <= present:
        layout = "harmonised"
    elif set(native) <= present:
        layout = "native"
    else:
        unused = sorted(present - set(names) - set(native) - {"subject", "session", "cohort"})
        raise PredictError(
            f"{table_path}: the columns do not fit the bundle of cohort {bundle.cohort}: expected its harmonised "
            f"columns {names} (missing {[n for n in names if n not in present]}) or its native columns {native} "
            f"(missing {[n for n in native if n not in present]}); columns of the file the bundle does not know: "
            f"{unused}. A table of another cohort needs that cohort's bundle.")
    log.info("%s: %d row(s) in the cohort's %s columns", table_path, len(table), layout)

    def harmonised_value(column: dict, text: str) -> float:
        if column["type"] == "continuous":
            value = parse_number(column["name"], text, missing=[])
            if column["range"] is not None and not math.isnan(value) and not column["range"][0] <= value <= column["range"][1]:
                raise CellError(column["name"], f"value {value:g} is outside the expected range {column['range']}")
            return value
        code = normalise_code(text)
        if is_blank(code):
            return math.nan
        if code in column["levels"]:  # a level name
            return float(column["levels"][code])
        if code in {str(v) for v in column["levels"].values()}:  # an integer level code, as in visits.tsv
            return float(code)
        raise CellError(column["name"], f"unknown category code '{text}' (expected a level code "
                                        f"{sorted(column['levels'].values())} or a level name {list(column['levels'])})")

    rows = []
    for line, record in enumerate(table.to_dict("records"), start=2):
        row = ClinicalRow(subject=record["subject"].strip(), session=record.get("session", "").strip(), line=line)
        rows.append(row)
        where = f"{table_path} row {line}"
        if "cohort" in record and record["cohort"].strip() not in ("", bundle.cohort):
            row.problem = f"{where}, column cohort: {record['cohort']!r}, but this bundle serves cohort {bundle.cohort}"
            continue
        visit_date = None
        if layout == "native" and not is_blank(normalise_code(record.get(VISIT_DATE_COLUMN, ""))):
            try:
                visit_date = date.fromisoformat(record[VISIT_DATE_COLUMN].strip())
            except ValueError:
                row.problem = f"{where}, column {VISIT_DATE_COLUMN}: '{record[VISIT_DATE_COLUMN]}' is not a date (YYYY-MM-DD)"
                continue
        for column in columns:
            try:
                row.values[column["name"]] = (harmonise(column, record, visit_date, crosswalks) if layout == "native"
                                              else harmonised_value(column, record[column["name"]]))
            except CellError as error:
                # Training made such a cell missing and listed it; a prediction must not rest on a guess.
                feeds = f" (feeds {column['name']})" if error.column != column["name"] else ""
                row.problem = f"{where}, column {error.column}{feeds}: {error}"
                break
    # A subject (and session) listed twice is ambiguous: neither row is used.
    keys = [(row.subject, row.session) for row in rows]
    for row in rows:
        if keys.count((row.subject, row.session)) > 1 and not row.problem:
            lines = [r.line for r in rows if (r.subject, r.session) == (row.subject, row.session)]
            row.problem = f"{table_path}: rows {lines} all describe subject {row.subject}; keep one"
    return rows


def match_row(rows: list[ClinicalRow], subject: str, session: str) -> ClinicalRow | None:
    """The row of one image: the subject's row of the same session, else its one row without a session."""
    same = [r for r in rows if r.subject == subject and r.session == session]
    return same[0] if same else next((r for r in rows if r.subject == subject and r.session == ""), None)


# --- predict --------------------------------------------------------------------------------------


def check_encoder(bundle, encoder: str | None) -> None:
    """Refuse a bundle whose header vectors come from another encoder than the configured one."""
    if encoder and encoder != bundle.encoder:
        raise PredictError(
            f"bundle {bundle.folder} was built with header encoder {bundle.encoder!r} (sha256 "
            f"{bundle.manifest['encoder'].get('encoder_sha256')}), but the configured encoder is {encoder!r} "
            f"(headers.encoder): its weights belong to {bundle.encoder!r}'s header vectors. Use a bundle built "
            f"with {encoder!r}, or configure {bundle.encoder!r}.")


def classify(bundle, subjects: pd.DataFrame, gpus: int, threads: int) -> np.ndarray:
    """Class probabilities [N, K] of ``subjects`` (rows: ``subject, session, volume`` and the
    harmonised column values), through the evaluation stage's own code."""
    from model.data import CohortRows
    from model.distributed import setup_processes
    from model.training import predict
    from workflow.tables import MISSING_PREFIX, encode
    from workflow.settings import EvaluateSettings
    from workflow.train import evaluation_dataset, load_checked_header_bank, load_fine_tuned

    settings = EvaluateSettings.from_params(bundle.model_settings, source=f"{bundle.folder} model settings")
    processes = setup_processes(gpus, "predict --gpus", threads)
    bank = load_checked_header_bank(bundle.path("header_bank"), bundle.encoder)
    header_ids = {text: row for row, text in enumerate(bank.headers)}
    columns = bundle.columns()
    names = [c["name"] for c in columns]
    encoded = encode(subjects, bundle.stats())  # the tables stage's encoding, training-split statistics
    rows = CohortRows(
        cohort=bundle.cohort,
        keys=[(bundle.cohort, s, t) for s, t in zip(subjects["subject"], subjects["session"])],
        volumes=list(subjects["volume"]),
        values=encoded[names].to_numpy(dtype=np.float32),
        missing=encoded[[MISSING_PREFIX + name for name in names]].to_numpy(dtype=bool),
        col_ids=np.array([header_ids[c["header"]] for c in columns], dtype=np.int64),
        column_names=[c["name"] for c in columns],
        labels=np.full(len(subjects), -1, dtype=np.int64),  # unknown: new subjects
    )
    model, _ = load_fine_tuned(bundle.path("weights"), bank, settings, columns, processes.device)
    dataset = evaluation_dataset(rows, settings, bundle.manifest["seed"], model)
    _, probabilities, indices = predict(model, dataset, settings.batch_size, processes.device, settings.bf16)
    ordered = np.empty_like(probabilities)
    ordered[indices] = probabilities
    return ordered


def run_predict(bundle_dir: str | Path, images: str | Path, table: str | Path, output: str | Path,
                encoder: str | None = None, gpus: int = 0, threads: int | None = None) -> dict:
    """Predict every new subject that has a usable image and row; report the others with the reason.

    Args:
        bundle_dir: a bundle folder (``paths.BUNDLE_DIR``).
        images: a folder of T1 NIfTI files or a TSV ``subject, session?, path`` (:func:`list_images`).
        table: the clinical CSV (:func:`read_clinical_rows`).
        output: the output folder (``paths.PREDICTIONS``, ``paths.PREDICT_QC``, ``paths.PREDICT_WORK_DIR``).
        encoder: the configured header encoder; a bundle of another one is refused.
        gpus: 0 (CPU) or 1; threads: CPU threads (default: those the bundle's volumes were made with).
    Returns:
        ``{"predictions": frame, "qc": frame}`` as written.
    """
    from workflow.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    check_encoder(bundle, encoder)
    threads = threads or bundle.preprocess.threads
    new_images = list_images(images)
    rows = read_clinical_rows(table, bundle)
    work_dir = Path(paths.PREDICT_WORK_DIR.format(output=output))
    class_names, names = bundle.class_names, [c["name"] for c in bundle.columns()]

    qc, usable, used_rows = [], [], set()
    for image in new_images.to_dict("records"):
        row = match_row(rows, image["subject"], image["session"])
        entry = {"cohort": bundle.cohort, "subject": image["subject"], "session": image["session"], "predicted": False,
                 "reason": "", "image": image["path"], "table_row": row.line if row else "", "ncc_template": None,
                 "brain_volume_ml": None, "columns_missing": ""}
        qc.append(entry)
        if row is None:
            entry["reason"] = f"no usable row: subject {image['subject']} is not in {table}"
            continue
        used_rows.add(row.line)
        if row.problem:  # the image is not preprocessed: it could not be predicted anyway
            entry["reason"] = f"no usable row: {row.problem}"
            continue
        entry["columns_missing"] = ",".join(n for n in names if math.isnan(row.values[n]))
        outcome = preprocess_image(bundle, image["subject"], image["session"], image["path"], work_dir, threads,
                                   "cuda" if gpus else "cpu")
        entry.update(ncc_template=outcome.ncc_template, brain_volume_ml=outcome.brain_volume_ml, reason=outcome.reason,
                     predicted=not outcome.reason)
        if not outcome.reason:
            usable.append({"subject": image["subject"], "session": image["session"], "volume": outcome.volume,
                           **row.values})
    for row in rows:
        if row.line not in used_rows:
            qc.append({"cohort": bundle.cohort, "subject": row.subject, "session": row.session, "predicted": False,
                       "reason": f"no image: no T1 of subject {row.subject} in {images}", "image": "",
                       "table_row": row.line, "ncc_template": None, "brain_volume_ml": None, "columns_missing": ""})

    predictions = pd.DataFrame(columns=PREDICTION_KEY_COLUMNS + [f"prob_{name}" for name in class_names])
    if usable:
        subjects = pd.DataFrame(usable)
        probabilities = classify(bundle, subjects, gpus, threads)
        predictions = pd.DataFrame({
            "cohort": bundle.cohort, "subject": subjects["subject"], "session": subjects["session"],
            "prediction": probabilities.argmax(1), "prediction_name": [class_names[k] for k in probabilities.argmax(1)],
        })
        for k, name in enumerate(class_names):
            predictions[f"prob_{name}"] = probabilities[:, k].round(6)
    qc_table = pd.DataFrame(qc, columns=QC_COLUMNS)
    qc_table["predicted"] = qc_table["predicted"].map({True: "true", False: "false"})
    Path(output).mkdir(parents=True, exist_ok=True)
    predictions.to_csv(paths.PREDICTIONS.format(output=output), sep="\t", index=False)
    qc_table.to_csv(paths.PREDICT_QC.format(output=output), sep="\t", index=False, float_format="%.4f")
    log.info("predicted %d of %d subject(s) with bundle %s; the others are in %s with the reason", len(predictions),
             len(qc_table), bundle.folder, paths.PREDICT_QC.format(output=output))
    for entry in qc:
        if entry["reason"]:
            log.warning("not predicted: %s %s: %s", entry["subject"], entry["session"], entry["reason"])
    return {"predictions": predictions, "qc": qc_table}


# --- a finished run's test subjects as new-subject inputs -----------------------------------------


def write_test_subject_inputs(table_path: str, stats_path: str, intake_images_path: str, images_out: str,
                              table_out: str) -> None:
    """Write the test split of a cohort's table as predict inputs: ``images_out`` (TSV ``subject,
    session, path``: the native T1s intake listed) and ``table_out`` (CSV ``subject, session,
    label_name`` and the harmonised columns, decoded from the table by ``workflow.tables.decode``)."""
    from workflow.preprocess import read_images_table
    from workflow.tables import decode

    table = pd.read_csv(table_path, sep="\t", dtype={"subject": str, "session": str})
    test = table[table["split"] == "test"].reset_index(drop=True)
    stats = json.loads(Path(stats_path).read_text())
    native = read_images_table(intake_images_path).set_index(["subject", "session"])["path"]
    images = pd.DataFrame({"subject": test["subject"], "session": test["session"],
                           "path": [native[(s, t)] for s, t in zip(test["subject"], test["session"])]})
    decoded = pd.DataFrame([decode(row, stats) for row in test.to_dict("records")], columns=list(stats["columns"]))
    clinical = pd.concat([test[["subject", "session", "label_name"]], decoded], axis=1)
    for path in (images_out, table_out):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    images.to_csv(images_out, sep="\t", index=False)
    clinical.to_csv(table_out, index=False, float_format="%.10g")
    log.info("%d test subject(s) of %s written as predict inputs: %s, %s", len(test), table_path, images_out, table_out)


# --- command line ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workflow.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="bundle folder (results/bundles/<variant>/<cohort>/seed-<s>)")
    parser.add_argument("--images", required=True, help="folder of T1 NIfTI files, or TSV subject, session?, path")
    parser.add_argument("--table", required=True, help="CSV: subject (session?) + the cohort's native or harmonised columns")
    parser.add_argument("--out", required=True, help="output folder: predictions.tsv, qc.tsv, work/")
    parser.add_argument("--encoder", default=None, help="the configured header encoder (headers.encoder); refuses a bundle of another")
    parser.add_argument("--gpus", type=int, default=0, choices=(0, 1))
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: the bundle's preprocess.threads)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m workflow.predict``; a refused request ends with one line and exit code 1."""
    from model.checkpoints import CheckpointError
    from workflow.bundle import BundleError
    from workflow.logs import log_to

    args = _parser().parse_args(argv)
    with log_to(None):
        try:
            result = run_predict(args.bundle, args.images, args.table, args.out, args.encoder, args.gpus, args.threads)
        except (PredictError, BundleError, CheckpointError) as error:
            print(f"ERROR (predict): {error}", file=sys.stderr)
            return 1
    print(f"predicted {len(result['predictions'])} of {len(result['qc'])} subject(s): "
          f"{paths.PREDICTIONS.format(output=args.out)}, QC and reasons in {paths.PREDICT_QC.format(output=args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
