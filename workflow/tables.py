"""The model-ready clinical table of one cohort: alignment, one timepoint, split, encoding.

Steps (docs/interfaces.md section 4):

1. only images that passed preprocessing QC are candidates;
2. static columns (sex, education, APOE ...) are filled per subject from any visit;
3. each image is paired with a labelled visit within ``window_days`` of it: the visit of the same
   visit code first, else the labelled visit closest in date (tie: the earlier visit);
4. one image-visit pair per subject (``first`` | ``last`` | seeded ``random``);
5. a subject-wise split, stratified by label and seeded (or a user's split table);
6. encoding: categorical -> integer codes, continuous -> z-score with the mean and SD of the
   non-missing cells (training split by default), missing -> 0, plus a missingness mask.

Every image or visit that does not reach the table is written to the exclusions table with a
reason whose first words (before ``:``) are its category, counted in the summary.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from workflow import paths
from workflow.columns import LABEL_CLASSES, cohort_spec
from workflow.intake import Exclusions, read_text_table
from workflow.settings import TablesSettings

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
TABLE_KEY_COLUMNS = ["cohort", "subject", "session", "source_id", "volume", "split", "label", "label_name",
                     "visit_code", "visit_date", "delta_days", "alignment"]
MISSING_PREFIX = "missing__"
LABEL_NAMES = {code: name for name, code in LABEL_CLASSES.items()}


class TableError(ValueError):
    """The inputs cannot give a usable table (the run stops)."""


# --- step 1: preprocessing QC ----------------------------------------------------------------------

def qc_candidates(images: pd.DataFrame, qc: pd.DataFrame, qc_file: str, exclusions: Exclusions) -> pd.DataFrame:
    """The images that passed preprocessing QC, with their model-ready ``volume`` path.

    Args:
        images: intake ``images.tsv`` rows.
        qc: preprocessing ``qc.tsv`` (cohort, subject, session, passed, reason, volume, ...).
        qc_file: its path (named in exclusions).
        exclusions: collects the images that failed or have no QC row.
    """
    missing = [c for c in ("subject", "session", "passed", "reason", "volume") if c not in qc.columns]
    if missing:
        raise TableError(f"{qc_file}: required column(s) {missing} not found (docs/interfaces.md section 3)")
    qc = qc.assign(_line=range(2, len(qc) + 2))
    merged = images.merge(qc[["subject", "session", "passed", "reason", "volume", "_line"]],
                          on=["subject", "session"], how="left", indicator=True)
    keep = []
    for row in merged.to_dict("records"):
        if row["_merge"] == "left_only":
            exclusions.add(row["subject"], row["session"], qc_file, "", "passed",
                           "image not preprocessed: no row in the preprocessing QC table")
        elif str(row["passed"]).strip().lower() != "true":
            exclusions.add(row["subject"], row["session"], qc_file, row["_line"], "passed",
                           f"image failed preprocessing QC: {row['reason'] or 'no reason given'}")
        else:
            keep.append(row)
    columns = [*images.columns, "volume"]
    return pd.DataFrame(keep, columns=[*columns, "_merge"])[columns]


# --- step 2: static fill ---------------------------------------------------------------------------

def fill_static(visits: pd.DataFrame, columns: list[dict]) -> pd.DataFrame:
    """Fill each static column per subject with its first non-missing value in date order.

    Args:
        visits: intake ``visits.tsv`` rows (labelled or not: an unlabelled visit still tells sex).
        columns: the cohort's column definitions.
    Returns:
        A copy of ``visits`` with the static columns filled.
    """
    static = [column["name"] for column in columns if column["static"]]
    if not static or visits.empty:
        return visits.copy()
    ordered = visits.sort_values(["subject", "visit_date", "visit_code"], kind="stable")
    first = ordered.groupby("subject")[static].first()  # first non-null per subject
    filled = visits.copy()
    for name in static:
        filled[name] = filled[name].fillna(filled["subject"].map(first[name]))
    return filled


# --- step 3: alignment -----------------------------------------------------------------------------

def days_between(later: str, earlier: str) -> float:
    """``later - earlier`` in days for ISO dates; NaN when either is blank."""
    if not isinstance(later, str) or not isinstance(earlier, str) or not later or not earlier:
        return math.nan
    return float((date.fromisoformat(later) - date.fromisoformat(earlier)).days)


def match_visit(visit_code: str, acq_date: str, visits: pd.DataFrame, window_days: int,
                exact_visit_code: bool = True) -> tuple[int | None, float, str]:
    """Pick the labelled visit of one image.

    Args:
        visit_code: the image's visit code ('' when unknown).
        acq_date: the image's acquisition date (ISO).
        visits: the subject's labelled visits (columns ``visit_code``, ``visit_date``), any index.
        window_days: largest allowed ``|visit_date - acq_date|`` in days, for every pair: a visit
            of the same code further away (or without a date) is not taken on its code.
        exact_visit_code: whether a visit of the same code wins before dates are compared.
    Returns:
        ``(index label of the visit or None, delta_days = visit_date - acq_date, how)`` where
        ``how`` is ``exact_visit_code``, ``closest_date``, or the reason no visit was found (with
        the day gap of the closest visit, and of the same-code visit when it was too far).
    """
    same_code = ""
    if exact_visit_code and visit_code:
        same = visits[visits["visit_code"] == visit_code]
        if not same.empty:
            index = same.index[0]
            delta = days_between(same.loc[index, "visit_date"], acq_date)
            if not math.isnan(delta) and abs(delta) <= window_days:
                return index, delta, "exact_visit_code"
            # A visit code can be reused for a scan months off schedule: the window still applies.
            same_code = (f"; the labelled visit of the same visit code ({visit_code}) "
                         + ("has no date" if math.isnan(delta) else f"is {abs(delta):.0f} days from the image"))
    if visits.empty:
        return None, math.nan, "no labelled visit: the subject has no visit with a usable label"
    deltas = pd.Series([days_between(d, acq_date) for d in visits["visit_date"]], index=visits.index, dtype=float)
    dated = deltas.dropna()
    if dated.empty:
        return None, math.nan, "no labelled visit: none of the subject's labelled visits has a date" + same_code
    within = dated[dated.abs() <= window_days]
    if within.empty:
        closest = dated.abs().min()
        return None, math.nan, (f"no visit within the window: the closest labelled visit is {closest:.0f} days "
                                f"from the image (window {window_days} days){same_code}")
    # Smallest |delta|; on a tie the earlier visit (the more negative delta) wins.
    order = sorted(within.index, key=lambda i: (abs(within[i]), within[i]))
    return order[0], float(within[order[0]]), "closest_date"


def align(images: pd.DataFrame, visits: pd.DataFrame, window_days: int, exact_visit_code: bool,
          visits_file: str, exclusions: Exclusions) -> pd.DataFrame:
    """Pair every candidate image with a labelled visit (see :func:`match_visit`).

    Returns:
        One row per paired image: the image columns plus ``visit_code``, ``visit_date``, ``label``,
        the visit's column values, ``delta_days`` and ``alignment``.
    """
    labelled = visits[visits["label"].fillna("") != ""]
    by_subject = {subject: group for subject, group in labelled.groupby("subject")}
    empty = labelled.iloc[0:0]
    value_columns = [c for c in visits.columns if c not in ("cohort", "subject", "source_id", "source_file", "source_row")]
    rows = []
    for image in images.to_dict("records"):
        candidates = by_subject.get(image["subject"], empty)
        index, delta, how = match_visit(image["visit_code"] if isinstance(image["visit_code"], str) else "",
                                        image["acq_date"], candidates, window_days, exact_visit_code)
        if index is None:
            exclusions.add(image["subject"], image["session"], visits_file, "", "visit_date", how)
            continue
        visit = candidates.loc[index]
        row = {key: image[key] for key in ("cohort", "subject", "session", "source_id", "acq_date", "path", "volume")}
        row.update({column: visit[column] for column in value_columns})
        row["delta_days"], row["alignment"] = delta, how
        rows.append(row)
    return pd.DataFrame(rows, columns=["cohort", "subject", "session", "source_id", "acq_date", "path", "volume",
                                       *value_columns, "delta_days", "alignment"])


# --- step 4: one timepoint per subject ------------------------------------------------------------

def pick_timepoint(pairs: pd.DataFrame, timepoint: str, seed: int, exclusions: Exclusions) -> pd.DataFrame:
    """Keep one image-visit pair per subject.

    Args:
        pairs: output of :func:`align`.
        timepoint: ``first`` (earliest image), ``last`` (latest image) or ``random`` (seeded).
        seed: seed of the ``random`` choice.
    """
    ordered = pairs.sort_values(["subject", "acq_date", "session"], kind="stable")
    if timepoint == "first":
        chosen = ordered.groupby("subject", sort=True).head(1)
    elif timepoint == "last":
        chosen = ordered.groupby("subject", sort=True).tail(1)
    elif timepoint == "random":
        rng = np.random.default_rng(seed)
        picks = [group.index[rng.integers(len(group))] for _, group in ordered.groupby("subject", sort=True)]
        chosen = ordered.loc[picks]
    else:
        raise TableError(f"tables.timepoint must be first, last or random, got {timepoint!r}")
    for row in pairs.drop(index=chosen.index).to_dict("records"):
        exclusions.add(row["subject"], row["session"], "", "", "",
                       f"another timepoint kept: one image per subject (timepoint={timepoint})")
    return chosen.sort_values("subject").reset_index(drop=True)


# --- step 5: split ---------------------------------------------------------------------------------

def allocate(class_counts: Mapping[object, int], fractions: Mapping[str, float]) -> dict[object, dict[str, int]]:
    """Split each class's ``count`` subjects by ``fractions``; every share is within one of exact.

    Each class gets the floor of its exact shares; its leftover subjects go, one per split, to the
    splits furthest below their cohort-wide target. Rounding each class on its own would starve a
    small split: three classes of three subjects at 7:1:2 would all round the 0.3 validation
    subjects down and leave the cohort with no validation subject at all.
    """
    total = sum(fractions.values())
    cohort_target = {split: sum(class_counts.values()) * fractions[split] / total for split in SPLITS}
    allocated = dict.fromkeys(SPLITS, 0)
    sizes = {}
    for label, count in class_counts.items():
        exact = {split: count * fractions[split] / total for split in SPLITS}
        sizes[label] = {split: int(math.floor(exact[split])) for split in SPLITS}
        for split in SPLITS:
            allocated[split] += sizes[label][split]
    for label, count in class_counts.items():
        exact = {split: count * fractions[split] / total for split in SPLITS}
        left = count - sum(sizes[label].values())
        ranked = sorted(SPLITS, key=lambda s: (-(cohort_target[s] - allocated[s]),
                                               -(exact[s] - sizes[label][s]), SPLITS.index(s)))
        for split in ranked[:left]:
            sizes[label][split] += 1
            allocated[split] += 1
    return sizes


def assign_split(subjects: pd.DataFrame, fractions: Mapping[str, float], seed: int) -> pd.DataFrame:
    """A subject-wise split, stratified by label and reproducible from ``seed``.

    Args:
        subjects: one row per subject with columns ``subject`` and ``label``.
        fractions: ``{"train": 0.7, "val": 0.1, "test": 0.2}``.
        seed: the same seed and subjects give the same split.
    Returns:
        ``subject, split`` sorted by subject.
    """
    rng = np.random.default_rng(seed)
    labels = sorted(subjects["label"].unique())
    members = {label: sorted(subjects.loc[subjects["label"] == label, "subject"]) for label in labels}
    sizes = allocate({label: len(members[label]) for label in labels}, fractions)
    rows = []
    for label in labels:
        shuffled = [members[label][i] for i in rng.permutation(len(members[label]))]
        start = 0
        for split in SPLITS:
            rows += [{"subject": s, "split": split} for s in shuffled[start:start + sizes[label][split]]]
            start += sizes[label][split]
    return pd.DataFrame(rows, columns=["subject", "split"]).sort_values("subject").reset_index(drop=True)


def read_split_table(path: str) -> pd.DataFrame:
    """A user's split table (TSV ``subject, split``); TableError naming the file and row if malformed
    (empty, not decodable, a missing column, an unknown split, a subject listed twice)."""
    table = read_text_table(path, "\t", "a split table (TSV) with columns subject, split", error=TableError, dtype=str,
                            keep_default_na=False)
    missing = [c for c in ("subject", "split") if c not in table.columns]
    if missing:
        raise TableError(f"{path}: required column(s) {missing} not found (expected subject, split)")
    for line, (subject, split) in enumerate(zip(table["subject"], table["split"]), start=2):
        if split not in SPLITS:
            raise TableError(f"{path}: line {line} (subject {subject}), column split: '{split}' is not one of {SPLITS}")
    repeated = table["subject"][table["subject"].duplicated()].tolist()
    if repeated:
        raise TableError(f"{path}: column subject: subjects listed more than once: {repeated[:10]}")
    return table[["subject", "split"]]


# --- step 6: encoding ------------------------------------------------------------------------------

def column_statistics(table: pd.DataFrame, columns: list[dict], scope: str, zscore_categorical: bool) -> dict:
    """The encoding statistics of every column.

    Args:
        table: one row per subject, harmonised values (NaN = missing) and ``split``.
        columns: the cohort's column definitions.
        scope: ``train_split`` (statistics from training rows only) or ``whole_table``.
        zscore_categorical: z-score categorical codes too.
    Returns:
        ``{"scope", "rows", "columns": {name: {"type", "zscored", "mean", "sd", "levels"?}}}``.
        The SD is the population SD (ddof 0) of the non-missing cells; a column with no spread
        (or no values) gets SD 1 so that encoding stays finite.
    """
    rows = table[table["split"] == "train"] if scope == "train_split" else table
    stats = {"scope": scope, "rows": int(len(rows)), "columns": {}}
    for column in columns:
        name = column["name"]
        zscored = column["type"] == "continuous" or zscore_categorical
        values = pd.to_numeric(rows[name], errors="coerce").dropna().to_numpy(dtype=float)
        mean = float(values.mean()) if zscored and len(values) else 0.0
        sd = float(values.std()) if zscored and len(values) else 1.0
        entry = {"type": column["type"], "zscored": zscored, "mean": mean, "sd": sd if sd > 0 else 1.0,
                 "non_missing": int(len(values))}
        if column["levels"] is not None:
            entry["levels"] = column["levels"]
        stats["columns"][name] = entry
    return stats


def encode(table: pd.DataFrame, stats: dict) -> pd.DataFrame:
    """Encoded values and missingness masks.

    Returns:
        A frame with, for each column of ``stats`` in order, ``<name>`` (float: z-score or code,
        0 when missing) and then ``missing__<name>`` (0/1) for each column in the same order.
    """
    values, masks = {}, {}
    for name, entry in stats["columns"].items():
        raw = pd.to_numeric(table[name], errors="coerce").astype(float)
        masks[MISSING_PREFIX + name] = raw.isna().astype(int)
        scaled = (raw - entry["mean"]) / entry["sd"] if entry["zscored"] else raw
        values[name] = scaled.fillna(0.0)
    return pd.DataFrame({**values, **masks}, index=table.index)


def decode(row: Mapping[str, float], stats: dict) -> dict[str, float | None]:
    """Undo :func:`encode` for one table row.

    Args:
        row: a row of ``table.tsv`` (needs ``<name>`` and ``missing__<name>`` of every column).
        stats: the content of ``stats.json``.
    Returns:
        ``{name: harmonised value}`` (the numbers of visits.tsv: categorical -> integer code),
        None where the cell was missing.
    """
    decoded: dict[str, float | None] = {}
    for name, entry in stats["columns"].items():
        if int(row[MISSING_PREFIX + name]):
            decoded[name] = None
        else:
            value = float(row[name])
            decoded[name] = value * entry["sd"] + entry["mean"] if entry["zscored"] else value
    return decoded


# --- summary ---------------------------------------------------------------------------------------

def summarise(cohort: str, table: pd.DataFrame, columns: list[dict], exclusions: pd.DataFrame, settings: dict) -> dict:
    """Counts per split and class, missingness per column, exclusions per reason category."""
    counts = {split: {name: int(((table["split"] == split) & (table["label_name"] == name)).sum())
                      for name in LABEL_CLASSES} for split in SPLITS}
    missing = {}
    for column in columns:
        mask = table[MISSING_PREFIX + column["name"]]
        missing[column["name"]] = {"all": float(mask.mean()) if len(mask) else 0.0,
                                   **{split: float(mask[table["split"] == split].mean()) if (table["split"] == split).any() else 0.0
                                      for split in SPLITS}}
    reasons = exclusions["reason"].str.split(":").str[0].value_counts().to_dict() if len(exclusions) else {}
    delta = table["delta_days"].astype(float).abs()
    return {
        "cohort": cohort, "subjects": int(len(table)), "counts": counts,
        "totals": {split: int((table["split"] == split).sum()) for split in SPLITS},
        "missing_fraction": missing,
        "exclusions": {"rows": int(len(exclusions)), "by_reason": {k: int(v) for k, v in reasons.items()}},
        "alignment": {"exact_visit_code": int((table["alignment"] == "exact_visit_code").sum()),
                      "closest_date": int((table["alignment"] == "closest_date").sum()),
                      "median_abs_delta_days": float(delta.median()) if delta.notna().any() else None,
                      "max_abs_delta_days": float(delta.max()) if delta.notna().any() else None},
        "settings": settings,
    }


def summary_markdown(summary: dict) -> str:
    """The summary as Markdown tables."""
    counts = pd.DataFrame(summary["counts"]).T.rename_axis("split")
    counts["total"] = counts.sum(axis=1)
    missing = pd.DataFrame(summary["missing_fraction"]).T.rename_axis("column")
    reasons = pd.DataFrame(sorted(summary["exclusions"]["by_reason"].items()), columns=["reason", "rows"])
    parts = [
        f"# Clinical table of {summary['cohort']}",
        f"{summary['subjects']} subjects, one image-visit pair each. Settings: "
        + ", ".join(f"{k}={v}" for k, v in summary["settings"].items()) + ".",
        "## Subjects per split and class", counts.to_markdown(),
        "## Missing fraction per column", missing.to_markdown(floatfmt=".3f"),
        "## Exclusions by reason", reasons.to_markdown(index=False) if len(reasons) else "None.",
        "## Alignment", pd.DataFrame([summary["alignment"]]).to_markdown(index=False),
    ]
    return "\n\n".join(parts) + "\n"


# --- the rule's one function -----------------------------------------------------------------------

def build_table(cohort: str, images_path: str, visits_path: str, intake_exclusions_path: str, qc_path: str,
                columns_path: str, split_table_path: str | None, settings: TablesSettings,
                outputs: Mapping[str, str]) -> None:
    """Rule ``build_table``: the model-ready table of one cohort and its companions.

    Args:
        cohort: cohort name (an entry of the column definitions file).
        images_path, visits_path, intake_exclusions_path: the intake outputs (``paths.INTAKE_*``).
        qc_path: the preprocessing QC table (``paths.PREPROCESS_QC``).
        columns_path: the column definitions file.
        split_table_path: a user's split table to honour, or None to draw a seeded split.
        settings: the ``tables:`` settings (``workflow.settings.tables_settings``).
        outputs: paths keyed ``table, columns, stats, split, exclusions, summary, summary_md``.
    Raises:
        TableError: when no subject is left, or an input is malformed.
    """
    if abs(sum(settings.split_fractions[name] for name in SPLITS) - 1.0) > 1e-6:
        raise TableError(f"tables.split_fractions must sum to 1, got {dict(settings.split_fractions)}")
    columns = cohort_spec(columns_path, cohort)["columns"]
    names = [column["name"] for column in columns]
    def read(path: str, what: str) -> pd.DataFrame:
        # The one guarded reader (workflow.intake.read_text_table): an empty or truncated file
        # stops with its name, not a pandas traceback.
        return read_text_table(path, "\t", what, error=TableError, dtype=str, keep_default_na=False)

    images = read(images_path, "intake's images table (docs/interfaces.md section 2)")
    visits = read(visits_path, "intake's visits table (docs/interfaces.md section 2)")
    absent = [name for name in names if name not in visits.columns]
    if absent:
        raise TableError(f"{visits_path}: columns {absent} of {columns_path} are missing; rerun intake_cohort")
    for name in names:
        visits[name] = pd.to_numeric(visits[name].mask(visits[name] == ""), errors="raise")
    qc = read(qc_path, "the preprocessing QC table (docs/interfaces.md section 3)")
    exclusions = Exclusions("tables", cohort)

    candidates = qc_candidates(images, qc, qc_path, exclusions)
    pairs = align(candidates, fill_static(visits, columns), settings.window_days, settings.exact_visit_code,
                  visits_path, exclusions)
    chosen = pick_timepoint(pairs, settings.timepoint, settings.seed, exclusions)

    if split_table_path:
        split = read_split_table(split_table_path)
        unknown = chosen[~chosen["subject"].isin(split["subject"])]
        for row in unknown.to_dict("records"):
            exclusions.add(row["subject"], row["session"], split_table_path, "", "subject",
                           "not in the split table: the user-supplied split table does not list this subject")
        chosen = chosen[chosen["subject"].isin(split["subject"])]
        split = split[split["subject"].isin(chosen["subject"])].sort_values("subject").reset_index(drop=True)
    else:
        split = assign_split(chosen[["subject", "label"]], settings.split_fractions, settings.seed)
    chosen = chosen.merge(split, on="subject", how="left")

    all_exclusions = pd.concat([read(intake_exclusions_path, "intake's exclusions table"), exclusions.frame()],
                               ignore_index=True)
    if chosen.empty:
        reasons = all_exclusions["reason"].str.split(":").str[0].value_counts().head(5).to_dict()
        raise TableError(f"cohort {cohort}: no usable rows (no image passed QC and matched a labelled visit). "
                         f"Most frequent exclusion reasons: {reasons}; see {intake_exclusions_path} and {qc_path}")

    stats = column_statistics(chosen, columns, settings.stats_scope, settings.zscore_categorical)
    table = chosen.assign(label=chosen["label"].map(LABEL_CLASSES).astype(int), label_name=chosen["label"])
    table = pd.concat([table[TABLE_KEY_COLUMNS].reset_index(drop=True), encode(chosen, stats).reset_index(drop=True)], axis=1)

    summary = summarise(cohort, table, columns, all_exclusions, {**settings.as_params(), "split_table": split_table_path or ""})
    for out in outputs.values():
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(outputs["table"], sep="\t", index=False, float_format="%.10g")
    split.to_csv(outputs["split"], sep="\t", index=False)
    all_exclusions[paths.EXCLUSION_COLUMNS].to_csv(outputs["exclusions"], sep="\t", index=False)
    described = [{key: column[key] for key in ("name", "header", "type")} | (
        {"levels": column["levels"]} if column["levels"] is not None else {}) for column in columns]
    Path(outputs["columns"]).write_text(yaml.safe_dump({"cohort": cohort, "columns": described}, sort_keys=False))
    Path(outputs["stats"]).write_text(json.dumps(stats, indent=2) + "\n")
    Path(outputs["summary"]).write_text(json.dumps(summary, indent=2) + "\n")
    Path(outputs["summary_md"]).write_text(summary_markdown(summary))
    log.info("%s: %d subjects (%s); %d exclusions", cohort, len(table), summary["totals"], len(all_exclusions))
