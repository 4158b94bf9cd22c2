"""Wall time of the rerun fingerprints (workflow/fingerprints.py) that every ``snakemake`` call pays.

Writes a LONI-like image download: ``--files`` small files (default 100,000) laid out as
``<participant>/<series>/<date>/I<image id>/<slice>.dcm`` with ``--per-image`` files per image folder
(a DICOM series is one file per slice), and a clinical CSV of ``--clinical-mb`` MB. Then times:

* ``folder_fingerprint`` of the image folder (size + mtime: one ``stat`` per file, nothing read),
  the first walk after writing and the best of three more;
* the clinical folder's fingerprint with content hashing (what intake's ``clinical`` folder gets);
* ``code_fingerprint`` of every rule's script in a fresh process (paid once per Snakemake process,
  including each job that Snakemake spawns for a ``script:`` rule).

The page cache is warm for all of these (the files were just written, and dropping caches needs
root); on a network file system a cold first walk costs one round trip per directory and file.

    .venv/bin/python benchmarks/fingerprints.py                          # 100,000 files (~10 s to write)
    .venv/bin/python benchmarks/fingerprints.py --files 2000 --clinical-mb 1 --workdir /tmp/fp
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from workflow.fingerprints import CLINICAL_CONTENT_MAX_BYTES, folder_fingerprint  # noqa: E402 (after the path set-up)

# Timed in a child process, so that no module or parse cache of this process helps it.
CODE_TIMING = """
import sys, time
from pathlib import Path
started = time.perf_counter()
from workflow.fingerprints import code_digest
imported = time.perf_counter()
scripts = sorted(Path("workflow/scripts").glob("*.py"))
for script in scripts:
    code_digest(script.as_posix())
code_digest("workflow.train", "workflow.gpu_slots")
done = time.perf_counter()
print(len(scripts) + 1, imported - started, done - imported)
"""


def write_download(images: Path, files: int, per_image: int, file_bytes: int) -> int:
    """Write ``files`` files of ``file_bytes`` bytes as a LONI download below ``images``.

    Args:
        images: the folder to fill (created).
        files: how many files in all.
        per_image: files per image folder (``I<id>``); 10 image folders per participant.
        file_bytes: size of each file.

    Returns:
        The number of directories written.
    """
    payload = b"\0" * file_bytes
    folders = 0
    for index in range(0, files, per_image):
        image = index // per_image
        participant = f"{image // 10:04d}_S_{image // 10:04d}"
        folder = images / participant / "MPRAGE" / f"2012-01-{image % 10 + 1:02d}_10_00_00.0" / f"I{image}"
        folder.mkdir(parents=True)
        folders += 1
        for slice_index in range(min(per_image, files - index)):
            (folder / f"slice_{slice_index:04d}.dcm").write_bytes(payload)
    return folders


def timed(function, *args) -> tuple[float, object]:
    """Wall time in seconds of one call, and its result."""
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: write the folders, time the fingerprints, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000, help="files in the image download")
    parser.add_argument("--per-image", type=int, default=100, help="files per image folder (DICOM slices)")
    parser.add_argument("--file-bytes", type=int, default=512, help="bytes per image file")
    parser.add_argument("--clinical-mb", type=float, default=16.0, help="size of the clinical CSV (ADNIMERGE: ~15 MB)")
    parser.add_argument("--workdir", type=Path, help="where to write (default: a temporary folder, removed after)")
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fingerprints-"))
    try:
        images, clinical = workdir / "images", workdir / "clinical"
        for folder in (images, clinical):
            shutil.rmtree(folder, ignore_errors=True)
        write_s, folders = timed(write_download, images, args.files, args.per_image, args.file_bytes)
        clinical.mkdir(parents=True)
        row = b"027_S_0074,bl,2005-09-08,CN,29,0.0,1.5,2.0,8.67,12,30,1,0,1\n"
        (clinical / "ADNIMERGE.csv").write_bytes(row * max(1, int(args.clinical_mb * 2**20 / len(row))))

        first_s, fingerprint = timed(folder_fingerprint, images)
        repeat_s = min(timed(folder_fingerprint, images)[0] for _ in range(3))
        clinical_s, _ = timed(folder_fingerprint, clinical, CLINICAL_CONTENT_MAX_BYTES)
        child = subprocess.run([sys.executable, "-c", CODE_TIMING], cwd=REPO, capture_output=True, text=True,
                               check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        rules, import_s, code_s = child.stdout.split()
        result = {
            "files": args.files, "directories": folders, "write_s": round(write_s, 2),
            "walk_first_s": round(first_s, 3), "walk_best_s": round(repeat_s, 3),
            "walk_us_per_file": round(repeat_s / args.files * 1e6, 2),
            "clinical_mb": args.clinical_mb, "clinical_content_s": round(clinical_s, 3),
            "code_fingerprints": int(rules), "code_import_s": round(float(import_s), 3),
            "code_all_rules_s": round(float(code_s), 3), "fingerprint": fingerprint,
        }
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"image download: {args.files:,} files in {folders:,} image folders (written in {write_s:.1f} s)")
    print(f"  size+mtime fingerprint: first walk {first_s:.3f} s, best of 3 {repeat_s:.3f} s "
          f"({result['walk_us_per_file']} us per file)")
    print(f"clinical folder: {args.clinical_mb} MB CSV hashed by content in {clinical_s:.3f} s")
    print(f"code fingerprints of {rules} rules in a fresh process: {float(code_s):.3f} s "
          f"(+ {float(import_s):.3f} s to import workflow.fingerprints)")
    print("result: " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
