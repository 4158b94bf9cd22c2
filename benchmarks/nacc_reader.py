"""Peak memory and wall time of the NACC intake reader on a UDS table the size of a full release.

NACC's UDS visit table (investigator_ftldlbd_nacc<NN>.csv) has about 205,909 rows x 1,936 columns
(~690 MB). This script writes such a table: the ~35 columns the NACC column definitions read
(config/columns.yaml) with valid values, then filler columns of NACC-like cells (blank, small
integer codes, -4 / 88 / 888 / 95 missing codes), plus a small MRI table and empty NIfTI files. It
then runs ``workflow.intake.read_cohort`` in a fresh child process and prints the child's wall time
and peak resident memory (VmHWM, else ``ru_maxrss``), before and after reading. Nothing is asserted; the target
is a peak under 2 GB.

    .venv/bin/python benchmarks/nacc_reader.py                       # full size (~1-2 min to write)
    .venv/bin/python benchmarks/nacc_reader.py --rows 2000 --columns 300 --workdir /tmp/nacc
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from workflow.columns import cohort_spec  # noqa: E402 (after the path set-up)
from workflow.intake import needed_columns  # noqa: E402

COLUMNS_YAML = REPO / "config" / "columns.yaml"
COHORT = "NACC"
UDS_NAME = "investigator_ftldlbd_nacc66.csv"
MRI_NAME = "investigator_mri_nacc66.csv"
KEY_COLUMNS = ["NACCID", "NACCVNUM", "VISITYR", "VISITMO", "VISITDAY"]
# Filler cells and how often each occurs: NACC's table is mostly blank (a form not given at the
# visit) or one-digit codes, so the whole file averages under two bytes per cell.
FILLER_CELLS = ["", "0", "1", "2", "3", "8", "9", "-4", "88", "888", "95", "12"]
FILLER_SHARES = [0.40, 0.15, 0.12, 0.05, 0.03, 0.03, 0.03, 0.12, 0.03, 0.02, 0.01, 0.01]
CHUNK_ROWS = 4096
MRI_ROWS = 500


def _valid_texts(column: dict, crosswalks: dict) -> list[str]:
    """Cell texts that harmonise without error for a configured column's primary source."""
    if column["type"] == "categorical":
        return list(column["map"]) if column["map"] is not None else list(column["levels"])
    low, high = column["range"] if column["range"] is not None else (0, 50)
    return [str(v) for v in range(int(low), int(high) + 1)]


def needed_values(rows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Valid text cells of every column the NACC reader reads, one array of ``rows`` per column.

    Every subject gets 1-8 visits numbered from 1, so (NACCID, NACCVNUM) is unique; 15% of the
    configured cells hold one of the column's missing codes; a fallback source (the UDS v3 test
    replacing a v1-2 one) holds a score its crosswalk knows.
    """
    from workflow.columns import load_columns

    spec = cohort_spec(COLUMNS_YAML, COHORT)
    crosswalks = load_columns(COLUMNS_YAML)["crosswalks"]
    visits_per_subject = rng.integers(1, 9, size=rows)
    subject = np.repeat(np.arange(rows), visits_per_subject)[:rows]
    first = np.r_[0, np.flatnonzero(np.diff(subject)) + 1]
    visit_number = np.arange(rows) - np.repeat(first, np.diff(np.r_[first, rows])) + 1
    values = {
        "NACCID": np.char.add("NACC", np.char.zfill(subject.astype(str), 6)),
        "NACCVNUM": visit_number.astype(str),
        "VISITYR": rng.integers(2005, 2024, size=rows).astype(str),
        "VISITMO": rng.integers(1, 13, size=rows).astype(str),
        "VISITDAY": rng.integers(1, 29, size=rows).astype(str),
    }
    choices: dict[str, tuple[list[str], list[str]]] = {}
    for column in spec["columns"]:
        choices.setdefault(column["source"][0], (_valid_texts(column, crosswalks), column["missing"]))
        fallback = column["fallback"]
        if fallback is not None:
            scores = list(crosswalks[fallback["crosswalk"]]) if fallback["crosswalk"] else ["1"]
            choices.setdefault(fallback["source"], (scores, fallback["missing"]))
    label = spec["label"]
    choices[label["column"]] = (list(label["map"]) + ["2"], label["missing"])
    for name, (valid, missing) in choices.items():
        cells = rng.choice(np.array(valid), size=rows)
        if missing:
            is_missing = rng.random(rows) < 0.15
            cells = np.where(is_missing, rng.choice(np.array(missing), size=rows), cells)
        values[name] = cells
    order = list(dict.fromkeys(KEY_COLUMNS + needed_columns(spec, "uds")))
    return {name: values[name] for name in order}


def _filler_block(rows: int, columns: int, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    """``rows`` lines of ``columns`` filler cells each (comma-separated, newline-ended), built with
    array operations; returns the bytes and the byte length of every line."""
    width = max(len(c) for c in FILLER_CELLS) + 1
    table = np.zeros((2, len(FILLER_CELLS), width), dtype=np.uint8)  # [0]: ends in ',', [1]: in '\n'
    for i, text in enumerate(FILLER_CELLS):
        for j, end in enumerate((b",", b"\n")):
            encoded = text.encode() + end
            table[j, i, :len(encoded)] = np.frombuffer(encoded, dtype=np.uint8)
    bounds = np.cumsum(FILLER_SHARES)
    codes = np.searchsorted(bounds / bounds[-1], rng.random((rows, columns), dtype=np.float32)).astype(np.uint8)
    codes = np.minimum(codes, len(FILLER_CELLS) - 1)
    cells = table[0][codes]
    cells[:, -1, :] = table[1][codes[:, -1]]
    lengths = (cells != 0).sum(axis=(1, 2))
    flat = cells.reshape(-1)
    return flat[flat != 0].tobytes(), lengths


def write_uds(path: Path, rows: int, columns: int, seed: int) -> None:
    """The UDS table: the needed columns first, then filler columns up to ``columns`` in all."""
    rng = np.random.default_rng(seed)
    values = needed_values(rows, rng)
    filler = columns - len(values)
    if filler < 1:
        raise SystemExit(f"--columns must exceed the {len(values)} columns the reader needs")
    header = list(values) + [f"FILL{i:04d}" for i in range(filler)]
    with open(path, "wb") as stream:
        stream.write((",".join(header) + "\n").encode())
        for start in range(0, rows, CHUNK_ROWS):
            stop = min(rows, start + CHUNK_ROWS)
            prefixes = [",".join(cells) + "," for cells in zip(*(v[start:stop] for v in values.values()))]
            body, lengths = _filler_block(stop - start, filler, rng)
            ends = np.cumsum(lengths)
            parts = []
            for prefix, begin, end in zip(prefixes, ends - lengths, ends):
                parts.append(prefix.encode())
                parts.append(body[begin:end])
            stream.write(b"".join(parts))


def write_mri(clinical: Path, images: Path, uds: Path) -> None:
    """A small MRI table (one T1 session for each of the first subjects) and its empty NIfTI files."""
    subjects = []
    with open(uds) as stream:
        next(stream)
        for line in stream:
            naccid = line.split(",", 1)[0]
            if not subjects or subjects[-1] != naccid:
                subjects.append(naccid)
            if len(subjects) >= MRI_ROWS:
                break
    images.mkdir(parents=True, exist_ok=True)
    lines = ["NACCID,NACCMNUM,MRIYR,MRIMO,MRIDY,NACCMRFI,MRIT1,NACCMRIA"]
    for i, naccid in enumerate(subjects):
        lines.append(f"{naccid},1,2015,{1 + i % 12},{1 + i % 28},mri{i}ni.zip,1,70")
        (images / f"mri{i}ni.nii.gz").write_bytes(b"")
    (clinical / MRI_NAME).write_text("\n".join(lines) + "\n")


def peak_rss_kib() -> int:
    """This process's peak resident memory in KiB.

    Linux's VmHWM belongs to the process image, so it starts afresh at exec; ``ru_maxrss`` would
    also count the parent's peak before the fork (the generator's arrays), kept across exec.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS


def child(workdir: Path) -> None:
    """Run the reader and print one JSON line with its wall time and peak memory."""
    from workflow.intake import read_cohort

    before_kib = peak_rss_kib()
    start = time.perf_counter()
    tables = read_cohort(workdir / "clinical", workdir / "images", COHORT, COLUMNS_YAML, "nacc")
    wall = time.perf_counter() - start
    peak_kib = peak_rss_kib()
    print(json.dumps({"wall_s": round(wall, 1), "peak_rss_mib": round(peak_kib / 1024, 1),
                      "rss_after_imports_mib": round(before_kib / 1024, 1), "visits": len(tables.visits),
                      "labelled": int((tables.visits["label"] != "").sum()), "images": len(tables.images),
                      "exclusions": len(tables.exclusions), "cell_qc": len(tables.cell_qc)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=205_909, help="UDS rows (visits); full release 205,909")
    parser.add_argument("--columns", type=int, default=1_936, help="UDS columns; full release 1,936")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="where to write the files (default: a temporary folder, removed)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nacc_reader_"))
    try:
        clinical = workdir / "clinical"
        clinical.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        write_uds(clinical / UDS_NAME, args.rows, args.columns, args.seed)
        write_mri(clinical, workdir / "images", clinical / UDS_NAME)
        size_mb = (clinical / UDS_NAME).stat().st_size / 1e6
        print(f"wrote {clinical / UDS_NAME}: {args.rows:,} rows x {args.columns:,} columns, {size_mb:,.0f} MB "
              f"in {time.perf_counter() - start:.1f} s")
        run = subprocess.run([sys.executable, __file__, "--child", str(workdir)], capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"reader failed ({run.returncode}):\n{run.stderr[-4000:]}")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        result.update(rows=args.rows, columns=args.columns, file_mb=round(size_mb, 1))
        print(f"reader: {result['wall_s']} s wall, peak RSS {result['peak_rss_mib']:,.0f} MiB "
              f"({result['rss_after_imports_mib']:,.0f} MiB after imports); {result['visits']:,} visits, "
              f"{result['labelled']:,} labelled, {result['images']} images, {result['cell_qc']} bad cells")
        print("result: " + json.dumps(result))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
