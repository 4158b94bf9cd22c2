"""Rerun fingerprints (workflow/fingerprints.py): data edits inside a cohort's folders and code edits
in imported modules rerun exactly the jobs that read them; comments and docstrings rerun nothing.

Four parts: the fingerprints as functions (folders and code written here); every rule of the
repository declares the code it runs; real Snakemake dry runs (`-n`) after an edit of a user's
folder, on a working directory where intake really ran on copies of the tiny synthetic cohorts
(`source: real`) and where the convert and intake jobs of raw downloads were recorded with
`--touch`; the cost benchmark at a small size. Budget: about 45 s on 2 idle cores (one intake run
of three cohorts and 8 more Snakemake calls of about 4 s, the workflow loaded once in-process).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TINY_CONFIG, VENV_ON_PATH, run_snakemake
from test_rerun import planned_jobs
from workflow.fingerprints import (
    ABSENT,
    CLINICAL_CONTENT_MAX_BYTES,
    code_closure,
    code_digest,
    code_fingerprint,
    folder_fingerprint,
)

COHORTS = ("ADNI", "AIBL", "NACC")


# --- folder fingerprints --------------------------------------------------------------------------


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write ``{relative path: bytes}`` below ``root``; returns ``root``."""
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def shift_mtime(path: Path, nanoseconds: int) -> None:
    """Move a file's mtime by ``nanoseconds`` (and nothing else)."""
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + nanoseconds))


def test_folder_fingerprint_sees_every_kind_of_file_change(tmp_path: Path) -> None:
    folder = write_tree(tmp_path / "images", {"sub-1/ses-M000/anat/t1.nii.gz": b"head one",
                                              "sub-2/ses-M000/anat/t1.nii.gz": b"head two"})
    first = folder_fingerprint(folder)
    assert first == folder_fingerprint(folder)
    assert first.startswith("2 files, 16 bytes, size+mtime")
    assert folder_fingerprint(tmp_path / "missing") == ABSENT

    seen = {first}
    image = folder / "sub-1/ses-M000/anat/t1.nii.gz"
    # Same size, same bytes, later mtime: size+mtime cannot tell a rewrite from a touch, so it counts.
    shift_mtime(image, 1_000)
    seen.add(folder_fingerprint(folder))
    image.write_bytes(b"head ONE")  # same size, other bytes
    shift_mtime(image, 1_000)
    seen.add(folder_fingerprint(folder))
    (folder / "sub-2/ses-M012/anat").mkdir(parents=True)  # a session
    (folder / "sub-2/ses-M012/anat/t1.nii.gz").write_bytes(b"head three")
    seen.add(folder_fingerprint(folder))
    (folder / "sub-2/ses-M012/anat/t1.nii.gz").rename(folder / "sub-2/ses-M012/anat/t1w.nii.gz")  # a rename
    seen.add(folder_fingerprint(folder))
    assert len(seen) == 5, seen


def test_clinical_content_hash_ignores_mtime_but_not_an_edit_in_the_same_tick(tmp_path: Path) -> None:
    folder = write_tree(tmp_path / "clinical", {"ADNIMERGE.csv": b"RID,MMSE\n1,29\n2,24\n"})
    table = folder / "ADNIMERGE.csv"
    before = folder_fingerprint(folder, CLINICAL_CONTENT_MAX_BYTES)
    shift_mtime(table, 10**9)  # a download of the same release: same bytes, new mtime
    assert folder_fingerprint(folder, CLINICAL_CONTENT_MAX_BYTES) == before
    info = table.stat()
    table.write_bytes(b"RID,MMSE\n1,29\n2,25\n")  # one value corrected, same size ...
    os.utime(table, ns=(info.st_atime_ns, info.st_mtime_ns))  # ... and an mtime that does not show it
    assert folder_fingerprint(folder, CLINICAL_CONTENT_MAX_BYTES) != before
    # Over the size limit a file is identified by size + mtime again.
    over_limit = folder_fingerprint(folder, content_max_bytes=4)
    assert "up to 4 bytes" in over_limit
    assert over_limit.split("sha256")[1] == folder_fingerprint(folder).split("sha256")[1]


def test_folder_fingerprint_survives_links(tmp_path: Path) -> None:
    folder = write_tree(tmp_path / "images", {"a/t1.nii.gz": b"x"})
    (folder / "a" / "loop").symlink_to(folder)  # a link back up: walked once
    (folder / "dangling").symlink_to(tmp_path / "gone")
    fingerprint = folder_fingerprint(folder)
    assert fingerprint.startswith("2 files, 1 bytes"), fingerprint


# --- code fingerprints ----------------------------------------------------------------------------


def write_project(root: Path) -> Path:
    """A small project: a script importing ``workflow.stage``, which imports ``workflow.helpers``
    inside a function, which imports ``workflow.paths`` relatively; ``workflow.unused`` is imported
    by nobody."""
    files = {
        "workflow/__init__.py": '"""The package."""\n',
        "workflow/paths.py": 'TABLE = "results/{cohort}/table.tsv"\n',
        "workflow/helpers.py": textwrap.dedent('''\
            """Helpers."""
            from . import paths


            def table_path(cohort):
                """Where the table goes."""
                return paths.TABLE.format(cohort=cohort)  # one file per cohort
            '''),
        "workflow/stage.py": textwrap.dedent('''\
            def run(cohort):
                from workflow.helpers import table_path
                return table_path(cohort)
            '''),
        "workflow/unused.py": "X = 1\n",
        "workflow/scripts/stage.py": "import os\nfrom workflow.stage import run\nrun(os.environ['COHORT'])\n",
    }
    return write_tree(root, {name: text.encode() for name, text in files.items()})


@contextlib.contextmanager
def edited(path: Path, old: str, new: str) -> Iterator[None]:
    """Replace ``old`` by ``new`` in ``path`` for the duration."""
    original = path.read_text()
    assert old in original, (old, path)
    path.write_text(original.replace(old, new))
    try:
        yield
    finally:
        path.write_text(original)


def test_code_digest_follows_imports_and_ignores_comments_and_docstrings(tmp_path: Path) -> None:
    project = write_project(tmp_path)
    script = "workflow/scripts/stage.py"
    closure = {path.relative_to(project).as_posix() for path in code_closure([script], project)}
    assert closure == {script, "workflow/__init__.py", "workflow/stage.py", "workflow/helpers.py", "workflow/paths.py"}
    before = code_digest(script, project_root=project)
    assert before.startswith("5 project files, normalised AST")

    unchanged = [
        (project / "workflow/helpers.py", "# one file per cohort", "# one table per cohort, see docs"),
        (project / "workflow/helpers.py", '"""Where the table goes."""', '"""Where the table goes.\n\n    More."""'),
        (project / "workflow/__init__.py", '"""The package."""', '"""The package, documented at length."""'),
        (project / "workflow/stage.py", "return table_path(cohort)", "return table_path(\n        cohort,\n    )"),
        (project / "workflow/unused.py", "X = 1", "X = 2"),  # not imported by the script
    ]
    for path, old, new in unchanged:
        with edited(path, old, new):
            assert code_digest(script, project_root=project) == before, (path.name, new)

    changed = [
        (project / "workflow/paths.py", "table.tsv", "table.csv"),  # two imports away
        (project / "workflow/helpers.py", "cohort=cohort", "cohort=cohort.upper()"),
        (project / "workflow/stage.py", "def run(cohort):", "def run(cohort, *_):"),
        (project / script, "run(os.environ['COHORT'])", "run(os.environ['SITE'])"),
    ]
    for path, old, new in changed:
        with edited(path, old, new):
            assert code_digest(script, project_root=project) != before, (path.name, new)
    assert code_digest(script, project_root=project) == before


def test_code_fingerprint_is_a_lazy_param_that_checks_its_roots(tmp_path: Path) -> None:
    project = write_project(tmp_path)
    param = code_fingerprint("workflow.stage", project_root=project)
    assert param.roots == ("workflow.stage",)
    assert param(None) == code_digest("workflow.stage", project_root=project)
    assert "workflow/paths.py" in param.files
    with pytest.raises(ValueError, match="workflow.stag"):
        code_fingerprint("workflow.stag", project_root=project)
    with pytest.raises(ValueError, match="scripts/missing.py"):
        code_fingerprint("workflow/scripts/missing.py", project_root=project)


def test_repository_paths_module_counts_and_a_comment_in_tables_does_not(tmp_path: Path) -> None:
    """The issue's two cases on a copy of the repository's packages."""
    for package in ("workflow", "model"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    intake = "workflow/scripts/intake_cohort.py"
    build_table = "workflow/scripts/build_table.py"
    assert "workflow/paths.py" in code_fingerprint(intake, project_root=tmp_path).files
    before = {script: code_digest(script, project_root=tmp_path) for script in (intake, build_table)}
    paths = tmp_path / "workflow" / "paths.py"
    with edited(paths, 'INTAKE_IMAGES = "results/intake/{cohort}/images.tsv"',
                'INTAKE_IMAGES = "results/intake/{cohort}/images_v2.tsv"'):
        assert all(code_digest(script, project_root=tmp_path) != before[script] for script in before)
    tables = tmp_path / "workflow" / "tables.py"
    with edited(tables, "from __future__ import annotations\n", "from __future__ import annotations  # (a comment)\n"):
        assert code_digest(build_table, project_root=tmp_path) == before[build_table]


def test_every_rule_fingerprints_the_code_it_runs() -> None:
    """Each rule's `code` param starts from its script, or from the modules its shell runs with -m."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    from workflow.fingerprints import CodeFingerprint

    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow_api = api.workflow(resource_settings=ResourceSettings(),
                                    config_settings=ConfigSettings(configfiles=[TINY_CONFIG]),
                                    snakefile=REPO / "Snakefile", workdir=REPO)
        rules = list(workflow_api._workflow.rules)  # no public listing of rules and their params
        problems = []
        for rule in rules:
            if not (rule.script or rule.shellcmd):
                continue
            code = [value for value in rule.params if isinstance(value, CodeFingerprint)]
            if len(code) != 1:
                problems.append(f"{rule.name}: {len(code)} code_fingerprint params")
                continue
            runs = ([(Path(rule.basedir) / rule.script).resolve().relative_to(REPO).as_posix()] if rule.script
                    else re.findall(r"-m\s+((?:workflow|model)[\w.]*)", rule.shellcmd))
            if not runs or set(runs) - set(code[0].roots):
                problems.append(f"{rule.name}: runs {runs}, fingerprints {code[0].roots}")
    assert len(rules) > 15 and not problems, problems


# --- Snakemake dry runs after edits of a user's folders -------------------------------------------
# Each dry run below changes one cohort and must plan that cohort's jobs and nothing else; together
# they also show that an unchanged cohort plans nothing (each cohort is unchanged in some of them).


def config_with_cohorts(cohorts: dict, folder: Path) -> Path:
    """tests/config.tiny.yaml with ``cohorts`` replacing its cohorts (all three named)."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["cohorts"] = cohorts
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def real_run(tiny_synthetic_cohorts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A working directory where intake ran on copies of the tiny cohorts as ``source: real``
    roots (``<workdir>/data/<cohort>``); returns ``(workdir, config)``. About 8 s."""
    workdir = tmp_path_factory.mktemp("real_cohorts")
    cohorts = {}
    for name, root in tiny_synthetic_cohorts.items():
        shutil.copytree(root, workdir / "data" / name)
        fmt = yaml.safe_load(TINY_CONFIG.read_text())["cohorts"][name]["format"]
        cohorts[name] = {"source": "real", "format": fmt, "root": str(workdir / "data" / name)}
    config = config_with_cohorts(cohorts, workdir)
    run_snakemake(workdir, *intake_targets(), "--cores", "2", configfiles=(config,), env=VENV_ON_PATH)
    return workdir, config


def intake_targets(cohorts: tuple[str, ...] = COHORTS) -> list[str]:
    return [f"results/intake/{name}/images.tsv" for name in cohorts]


def planned(workdir: Path, config: Path, targets: list[str]) -> set[tuple[str, str]]:
    """(rule, cohort) of every job a dry run of ``targets`` plans."""
    return {(rule, wildcards.get("cohort", "")) for rule, wildcards in
            planned_jobs(workdir, *targets, "--cores", "1", configfiles=(config,))}


@contextlib.contextmanager
def restored(*paths: Path) -> Iterator[None]:
    """Put the files back byte for byte, mtimes included, and remove files that were not there."""
    saved = {path: (path.read_bytes(), path.stat()) for path in paths if path.exists()}
    try:
        yield
    finally:
        for path in paths:
            if path in saved:
                content, info = saved[path]
                path.write_bytes(content)
                os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
            elif path.exists():
                path.unlink()


def test_appended_clinical_row_reruns_that_cohorts_intake(real_run: tuple[Path, Path]) -> None:
    workdir, config = real_run
    table = next((workdir / "data" / "ADNI" / "clinical").glob("ADNIMERGE*.csv"))
    with restored(table):
        lines = table.read_bytes().splitlines(keepends=True)
        table.write_bytes(b"".join(lines) + lines[-1])  # a new visit row
        assert planned(workdir, config, intake_targets()) == {("intake_cohort", "ADNI")}


def test_value_edited_in_place_reruns_that_cohorts_intake_even_with_the_old_mtime(real_run: tuple[Path, Path]) -> None:
    workdir, config = real_run
    table = next((workdir / "data" / "AIBL" / "clinical").glob("aibl_mmse_*.csv"))
    with restored(table):
        text, info = table.read_text(), table.stat()
        header, first, rest = text.split("\n", 2)
        digit = re.search(r"\d(?=\D*$)", first)  # the last digit of the first data row
        first = first[: digit.start()] + str((int(digit[0]) + 1) % 10) + first[digit.end():]
        table.write_text(f"{header}\n{first}\n{rest}")
        assert table.stat().st_size == info.st_size
        os.utime(table, ns=(info.st_atime_ns, info.st_mtime_ns))  # the worst case: mtime unchanged
        assert planned(workdir, config, intake_targets()) == {("intake_cohort", "AIBL")}


def test_added_session_reruns_that_cohorts_intake(real_run: tuple[Path, Path]) -> None:
    workdir, config = real_run
    session = sorted((workdir / "data" / "ADNI" / "bids").glob("sub-*/ses-*"))[0]
    new_session = session.parent / "ses-M999"
    try:
        shutil.copytree(session, new_session)
        for path in list(new_session.rglob("*")):
            if path.is_file():
                path.rename(path.with_name(path.name.replace(session.name, new_session.name)))
        assert planned(workdir, config, intake_targets()) == {("intake_cohort", "ADNI")}
    finally:
        shutil.rmtree(new_session, ignore_errors=True)


def test_replaced_image_reruns_that_cohorts_intake(real_run: tuple[Path, Path]) -> None:
    workdir, config = real_run
    images = sorted((workdir / "data" / "NACC" / "images").glob("*.nii.gz"))
    with restored(images[0]):
        images[0].write_bytes(images[1].read_bytes())  # another scan under the same name
        assert planned(workdir, config, intake_targets()) == {("intake_cohort", "NACC")}


def test_same_size_image_rewrite_reruns_through_mtime_ns(real_run: tuple[Path, Path]) -> None:
    workdir, config = real_run
    image = sorted((workdir / "data" / "AIBL" / "bids").rglob("*_T1w.nii.gz"))[0]
    with restored(image):
        content, info = bytearray(image.read_bytes()), image.stat()
        content[len(content) // 2] ^= 0xFF  # one byte, same size
        image.write_bytes(bytes(content))
        # An mtime one microsecond after the original: the only trace the fingerprint reads.
        os.utime(image, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000))
        assert planned(workdir, config, intake_targets()) == {("intake_cohort", "AIBL")}


def test_raw_download_edits_rerun_its_conversion_and_intake(tmp_path: Path) -> None:
    """Raw cohorts: the convert jobs fingerprint what they read (Clinica: images, clinical CSVs;
    dcm2niix: the zips), intake the clinical folder. Recorded with --touch: converting for real
    takes Clinica minutes."""
    data = tmp_path / "data"
    adni = write_tree(data / "ADNI", {"images/027_S_0074/MPRAGE/2012-01-01_10_00_00.0/I1/1.dcm": b"dicom",
                                      "clinical/ADNIMERGE.csv": b"RID,MMSE\n74,29\n"})
    nacc = write_tree(data / "NACC", {"mri/mri12345ni.zip": b"zip",
                                      "clinical/investigator_nacc66.csv": b"NACCID,NACCMMSE\nNACC1,29\n"})
    config = config_with_cohorts({
        "ADNI": {"source": "raw", "format": "adni", "root": str(adni)},
        "AIBL": {"source": "synthetic_raw", "format": "aibl"},  # not run: no target needs it
        "NACC": {"source": "raw", "format": "nacc", "root": str(nacc)},
    }, tmp_path)
    workdir = tmp_path / "run"
    targets = intake_targets(("ADNI", "NACC"))
    for name, converted in (("ADNI", "bids"), ("NACC", "images")):
        (workdir / "results" / "convert" / name / converted).mkdir(parents=True)
        (workdir / "results" / "convert" / name / "exclusions.tsv").touch()
        for table in ("images", "visits", "exclusions", "cell_qc"):
            (workdir / "results" / "intake" / name).mkdir(parents=True, exist_ok=True)
            (workdir / "results" / "intake" / name / f"{table}.tsv").touch()
    # --touch records each job's metadata (its params: the fingerprints) as if it had run.
    run_snakemake(workdir, *targets, "--cores", "1", "--touch", "--forcerun", "convert_clinica", "convert_nacc",
                  "intake_cohort", configfiles=(config,))

    dicom = adni / "images/027_S_0074/MPRAGE/2012-01-01_10_00_00.0/I2/1.dcm"  # a new image folder
    with restored(dicom):
        dicom.parent.mkdir()
        dicom.write_bytes(b"dicom 2")
        # intake follows the conversion it reads (its outputs will be newer)
        assert planned(workdir, config, targets) == {("convert_clinica", "ADNI"), ("intake_cohort", "ADNI")}
    shutil.rmtree(dicom.parent)
    uds = nacc / "clinical/investigator_nacc66.csv"
    with restored(uds):
        uds.write_bytes(uds.read_bytes() + b"NACC2,24\n")
        # dcm2niix reads no CSV: only intake reruns
        assert planned(workdir, config, targets) == {("intake_cohort", "NACC")}


def test_fingerprint_benchmark_runs_small(tmp_path: Path) -> None:
    """benchmarks/fingerprints.py still runs (at 2,000 files; README quotes its 100,000-file figures)."""
    process = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fingerprints.py"), "--files", "2000", "--clinical-mb", "1",
         "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert process.returncode == 0, process.stderr[-3000:]
    print(process.stdout)  # the measured cost, shown with pytest -s
    result = json.loads(process.stdout.split("result: ", 1)[1])
    assert result["fingerprint"].startswith("2000 files, 1024000 bytes, size+mtime")
    assert result["walk_best_s"] > 0 and result["code_fingerprints"] > 15
