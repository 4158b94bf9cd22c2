"""Provenance: from a row of a result table back to the settings, split, weights and code behind it.

Every pretraining, fine-tuning and evaluation job writes a record, ``provenance.json``, beside its
outputs (``paths.*_PROVENANCE``): the stage and its identity (variant, cohort(s), seed), the
settings it ran with and their hash, every input and output file with its sha256 (an input made by
another recorded job also names that job's record), the code version (the project's git commit and
the rule's code fingerprint) and the run hash. The run hash is the one the job's resume points
carry: settings, identity and input contents, so two records with the same run hash describe the
same computation.

Evaluation metrics and predictions carry the evaluation's run hash, and the rows of Tables 1-3
carry, per cohort, the run hashes of their evaluations (``<cohort>_runs``). From a row::

    python -m workflow.provenance results/report/table1.csv citab          # every cohort and seed
    python -m workflow.provenance results/report/table1.csv citab --cohort ADNI --json

walks evaluation -> fine-tuning -> pretraining and prints, per run, the settings of each stage,
the split file, the weights and the code version (``--json``: the records themselves).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import subprocess
import sys
from pathlib import Path

from model.hashing import fingerprint
from workflow import paths
from workflow.smk import REPO_ROOT

RUNS_SEPARATOR = ";"
RUNS_COLUMN = "{cohort}_runs"  # per cohort of a result table: the evaluations' run hashes


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_beside(file: str | Path) -> Path:
    """The provenance record of the job that wrote ``file`` (records sit beside their outputs)."""
    return Path(file).parent / paths.PROVENANCE_NAME


def code_version(code_fingerprint: str | None) -> dict:
    """The project's git commit (``dirty``: tracked files changed since) and the rule's code
    fingerprint (``workflow.fingerprints``: the digest of the modules the job runs). The commit is
    None outside a git checkout; the fingerprint identifies the code either way."""
    root = str(REPO_ROOT)
    commit, dirty = None, None
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
        if head.returncode == 0:
            commit = head.stdout.strip()
            status = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=30)
            dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"git_commit": commit, "git_dirty": dirty, "code_fingerprint": code_fingerprint}


def describe_file(path: str | Path, *, with_record: bool = False) -> dict:
    """Path and sha256 of a file; for an input, the record of the job that made it (when it has one)."""
    entry = {"path": str(path), "sha256": file_sha256(path)}
    if with_record and record_beside(path).is_file():
        entry["record"] = str(record_beside(path))
        entry["run_hash"] = json.loads(record_beside(path).read_text())["run_hash"]
    return entry


def write_record(path: str | Path, *, stage: str, identity: dict, settings: dict, run_hash: str,
                 inputs: dict[str, str | Path | None], outputs: dict[str, str | Path],
                 code_fingerprint: str | None) -> dict:
    """Write one job's record (see the module docstring) and return it.

    Args:
        path: the record file (``paths.*_PROVENANCE``).
        stage: ``pretrain``, ``pretrain_cohort``, ``finetune`` or ``evaluate``.
        identity: variant, cohort(s), seed: what the job is for.
        settings: the settings the job ran with (the rule's ``settings`` param, decoded).
        run_hash: the job's run hash (settings, identity and input contents).
        inputs / outputs: name -> file; inputs set to None (no pretrained weights) are left out.
    """
    record = {
        "stage": stage, **identity, "run_hash": run_hash,
        "settings_hash": fingerprint(settings), "settings": settings,
        "inputs": {name: describe_file(file, with_record=True) for name, file in inputs.items() if file},
        "outputs": {name: describe_file(file) for name, file in outputs.items()},
        "code": code_version(code_fingerprint),
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(path).with_name(Path(path).name + ".partial")
    temporary.write_text(json.dumps(record, indent=2, sort_keys=False, default=str) + "\n")
    temporary.replace(path)
    return record


# --- walking back from a table row ------------------------------------------------------------------


class ProvenanceError(ValueError):
    """A table row or run hash that cannot be traced, with what is missing."""


def evaluation_records(results_root: Path) -> dict[str, Path]:
    """Run hash -> record file of every evaluation under ``results_root`` (the run's working directory)."""
    pattern = paths.EVAL_PROVENANCE.format(variant="*", cohort="*", seed="*")
    found = {}
    for record_file in sorted(results_root.glob(pattern)):
        found[json.loads(record_file.read_text())["run_hash"]] = record_file
    return found


def row_runs(table_csv: str | Path, row: str, cohort: str | None = None) -> list[tuple[str, str]]:
    """(cohort, evaluation run hash) of one row of a result table (``variant`` column)."""
    import pandas as pd

    table = pd.read_csv(table_csv, dtype=str, keep_default_na=False).set_index("variant")
    if row not in table.index:
        raise ProvenanceError(f"{table_csv}: no row {row!r} (rows: {list(table.index)})")
    columns = [c for c in table.columns if c.endswith(RUNS_COLUMN.format(cohort=""))]
    if not columns:
        raise ProvenanceError(f"{table_csv} has no *_runs columns: it was written before results carried run "
                              "hashes; rerun its report rule")
    cohorts = [c[: -len(RUNS_COLUMN.format(cohort=""))] for c in columns]
    if cohort is not None and cohort not in cohorts:
        raise ProvenanceError(f"{table_csv}: no cohort {cohort!r} (cohorts: {cohorts})")
    runs = []
    for name in cohorts if cohort is None else [cohort]:
        cell = table.at[row, RUNS_COLUMN.format(cohort=name)]
        runs += [(name, run) for run in cell.split(RUNS_SEPARATOR) if run]
    if not runs:
        raise ProvenanceError(f"{table_csv}: row {row!r} lists no evaluation runs "
                              f"(status: {table.at[row, 'status'] if 'status' in table.columns else 'n/a'})")
    return runs


def chain(evaluation_record: Path, results_root: Path) -> list[dict]:
    """The records from an evaluation back through its fine-tuning to its pretraining (if any)."""
    records, current = [], evaluation_record
    while current is not None:
        record = json.loads(current.read_text())
        records.append(record)
        parents = [Path(entry["record"]) for name, entry in record["inputs"].items()
                   if name in ("weights", "pretrained") and "record" in entry]
        # records name files as the jobs saw them: relative to the run's working directory
        current = (parents[0] if parents[0].is_absolute() else results_root / parents[0]) if parents else None
    return records


def trace(table_csv: str | Path, row: str, cohort: str | None = None,
          results_root: str | Path = ".") -> list[list[dict]]:
    """Per evaluation of ``row``: its record chain (evaluation, fine-tuning, pretraining)."""
    root = Path(results_root)
    known = evaluation_records(root)
    chains = []
    for cohort_name, run in row_runs(table_csv, row, cohort):
        if run not in known:
            raise ProvenanceError(f"{table_csv}: row {row!r}, cohort {cohort_name}: evaluation run {run} has no "
                                  f"record under {root / paths.RESULTS} (moved, or overwritten by a later run)")
        chains.append(chain(known[run], root))
    return chains


def describe_chain(records: list[dict]) -> str:
    """A readable account of one chain (what ``python -m workflow.provenance`` prints)."""
    evaluation = records[0]
    lines = [f"{evaluation['variant']} / {evaluation['cohort']} / seed {evaluation['seed']}: "
             f"evaluation run {evaluation['run_hash']}"]
    for record in records:
        code = record["code"]
        commit = code["git_commit"] or "no git checkout"
        if code["git_dirty"]:
            commit += " (with uncommitted changes)"
        lines.append(f"  {record['stage']}: run {record['run_hash']}, settings {record['settings_hash']}, "
                     f"code {commit}, fingerprint {code['code_fingerprint']}")
        for name, entry in record["inputs"].items():
            lines.append(f"    input  {name}: {entry['path']} sha256 {entry['sha256'][:16]}")
        for name, entry in record["outputs"].items():
            lines.append(f"    output {name}: {entry['path']} sha256 {entry['sha256'][:16]}")
        lines.append("    settings: " + json.dumps(record["settings"], sort_keys=True))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workflow.provenance", description=__doc__.splitlines()[0])
    parser.add_argument("table", help="a result table's CSV (results/report/table1.csv, table2.csv, table3.csv)")
    parser.add_argument("row", help="the row's variant (the table's first column)")
    parser.add_argument("--cohort", default=None, help="one cohort only")
    parser.add_argument("--results-root", default=".", help="the run's working directory (holds results/)")
    parser.add_argument("--json", action="store_true", help="print the records as JSON")
    args = parser.parse_args(argv)
    try:
        chains = trace(args.table, args.row, args.cohort, args.results_root)
    except (ProvenanceError, OSError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(chains, indent=2))
    else:
        print("\n\n".join(describe_chain(records) for records in chains))
    return 0


if __name__ == "__main__":
    sys.exit(main())
