"""What makes a job rerun besides its input files: fingerprints of data folders and of project code.

Snakemake compares each job's ``params:`` values with the ones recorded when its outputs were made
(rerun trigger ``params``) and reruns the job when one differs; the jobs after it follow through
their inputs' mtimes. Two things that decide a job's outputs are invisible to Snakemake's other
triggers, and rules pass them as params computed here:

* **Data folders a user holds** (``source: real`` cohort roots, ``source: raw`` downloads).
  Snakemake only sees a folder's own mtime, which does not change when a file inside it does.
  :func:`folder_fingerprint` hashes (relative path, size, mtime_ns) of every file below the folder:
  one ``stat`` per file and no reading, because a LONI download holds up to a million DICOM files
  and reading them all on every ``snakemake`` call is not affordable. Files up to
  ``content_max_bytes`` (the clinical CSVs) are hashed by content instead of mtime, so a re-download
  or copy of the same release reruns nothing, and an edit made within one mtime tick is still seen.
  :func:`data_fingerprints` is the ``data`` param of the convert and intake rules (the folders each
  job reads: :func:`user_folders`); :func:`with_user_folders_ancient` makes the folders' own mtimes
  irrelevant, so that the fingerprint alone decides.
* **Project code a rule imports** (``workflow.*``, ``model.*``). Snakemake tracks a rule's
  ``script:`` file (mtime) and ``shell:`` text, not the modules they import.
  :func:`code_fingerprint` (every rule's ``code`` param) follows the imports from the rule's script
  or modules with :mod:`ast`, through every project module, and hashes each module's source with
  comments, formatting and docstrings normalised away: editing a comment or a docstring reruns
  nothing, any change to what the code does reruns the rules that import it.

Cost (``benchmarks/fingerprints.py``): README.md, *What reruns after a change*.
"""

from __future__ import annotations

import ast
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path

from snakemake.io import ancient

from workflow.convert import intake_folders, is_generated, is_raw, raw_folders
from workflow.smk import REPO_ROOT

# The fingerprint of a missing folder. Config checks stop a run whose folders are missing before any
# job; this value shows where a folder went missing later (then the job's missing input stops it).
ABSENT = "absent"
# Clinical CSVs are small (ADNIMERGE is ~15 MB); NACC's UDS file (~1 GB) is not, and stays size+mtime.
CLINICAL_CONTENT_MAX_BYTES = 64 * 2**20
_READ_CHUNK = 2**20


# --- data folders ------------------------------------------------------------------------------------


def _files_below(folder: str) -> Iterator[tuple[str, os.stat_result | None]]:
    """Every file below ``folder`` with its stat, in a fixed order (names sorted per directory).

    Args:
        folder: an existing directory.

    Returns:
        An iterator of ``(path relative to folder with / separators, stat)``; stat is ``None`` for
        a dangling symlink. Symlinks are followed (cohort folders are often links to another disk);
        a directory reached twice through links is walked once.
    """
    seen_dirs: set[tuple[int, int]] = set()
    stack = [""]
    while stack:
        relative = stack.pop()
        directory = os.path.join(folder, relative) if relative else folder
        info = os.stat(directory)
        if (info.st_dev, info.st_ino) in seen_dirs:
            continue
        seen_dirs.add((info.st_dev, info.st_ino))
        with os.scandir(directory) as entries:
            listed = sorted(entries, key=lambda entry: entry.name)
        subdirectories = []
        for entry in listed:
            name = f"{relative}/{entry.name}" if relative else entry.name
            try:
                # DirEntry caches d_type, so is_dir() costs no syscall except for symlinks.
                if entry.is_dir():
                    subdirectories.append(name)
                    continue
                yield name, entry.stat()
            except FileNotFoundError:
                yield name, None  # a dangling link: its presence is part of the fingerprint
        # Reversed, so that the stack pops them in sorted order (the order only needs to be fixed).
        stack.extend(reversed(subdirectories))


def _content_digest(path: str) -> str:
    """sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_fingerprint(folder: str | os.PathLike, content_max_bytes: int = 0) -> str:
    """A value that changes whenever a file below ``folder`` is added, removed, resized or rewritten.

    Args:
        folder: a data folder (a single file is fingerprinted as itself).
        content_max_bytes: files up to this size are identified by a sha256 of their bytes instead
            of their mtime (0: none; :data:`CLINICAL_CONTENT_MAX_BYTES` for clinical folders).

    Returns:
        ``"absent"`` for a missing path, else ``"<n> files, <bytes> bytes, <scheme> sha256 <hex>"``,
        where the hash covers every file's relative path, size and mtime in nanoseconds (or content
        digest). Counts come first so that Snakemake's "params changed" message says what changed.
    """
    folder = os.fspath(folder)
    if not os.path.exists(folder):
        return ABSENT
    if os.path.isdir(folder):
        files: Iterable[tuple[str, os.stat_result | None]] = _files_below(folder)
    else:
        files = [(".", os.stat(folder))]
    digest = hashlib.sha256()
    count = total = 0
    for relative, info in files:
        count += 1
        if info is None:
            identity = "dangling link"
        elif not stat.S_ISREG(info.st_mode):
            identity = f"special file {info.st_mode:o}"
        else:
            total += info.st_size
            if info.st_size <= content_max_bytes:
                path = os.path.join(folder, relative) if relative != "." else folder
                identity = f"{info.st_size}\0content {_content_digest(path)}"
            else:
                identity = f"{info.st_size}\0mtime_ns {info.st_mtime_ns}"
        # NUL cannot occur in a file name, so no two listings hash the same text; surrogateescape
        # encodes names that are not UTF-8 back to their bytes (as os.fsencode does).
        digest.update(f"{relative}\0{identity}\n".encode("utf-8", "surrogateescape"))
    limit = f"{content_max_bytes // 2**20} MiB" if content_max_bytes % 2**20 == 0 else f"{content_max_bytes} bytes"
    scheme = f"content of files up to {limit}, else size+mtime" if content_max_bytes else "size+mtime"
    return f"{count} files, {total} bytes, {scheme}: sha256 {digest.hexdigest()[:32]}"


@lru_cache(maxsize=None)
def cached_folder_fingerprint(folder: str, content_max_bytes: int = 0) -> str:
    """:func:`folder_fingerprint`, computed once per process.

    Snakemake evaluates a job's params each time it (re)creates the job, e.g. after every
    checkpoint; one walk per ``snakemake`` call is enough. A file edited while the workflow runs
    then shows as a change on the next call, which reruns the job: the safe side.

    Args:
        folder: a data folder.
        content_max_bytes: as for :func:`folder_fingerprint`.

    Returns:
        The folder's fingerprint at its first evaluation in this process.
    """
    return folder_fingerprint(folder, content_max_bytes)


# The stages whose jobs read a user's folders: the convert rules (a raw download) and intake.
DATA_STAGES = ("convert", "intake")


def user_folders(config: dict, cohort: str, stage: str) -> dict[str, str]:
    """The folders held by the user (not written by a rule) that a job of ``stage`` reads.

    Args:
        config: the workflow config.
        cohort: a cohort name.
        stage: ``convert``: what the conversion of a ``raw`` cohort reads (ADNI / AIBL: the
            download's ``images``, ``clinical`` and optional ``xml``, all read by Clinica; NACC: the
            ``images`` zips only, dcm2niix reads no CSV). ``intake``: ``clinical`` and ``images``
            of a ``real`` cohort; only ``clinical`` of a ``raw`` one, whose images are the convert
            stage's output.

    Returns:
        ``{name: folder}``; empty for generated cohorts (``synthetic``, ``synthetic_raw``), whose
        roots are rule outputs that Snakemake already tracks.
    """
    if stage not in DATA_STAGES:
        raise ValueError(f"user_folders: stage {stage!r} is not one of {DATA_STAGES}")
    settings = config["cohorts"][cohort]
    if is_generated(settings):
        return {}
    if stage == "convert":
        if not is_raw(settings):
            return {}
        folders = raw_folders(config, cohort)
        return {"images": folders["images"]} if settings["format"] == "nacc" else folders
    folders = intake_folders(config, cohort)
    return {"clinical": folders["clinical"]} if is_raw(settings) else folders


def data_fingerprints(config: dict, cohort: str, stage: str) -> dict[str, str]:
    """The ``data`` param of a job that reads a user's folders: one fingerprint per folder.

    Snakemake's ``params`` trigger reruns the job when a file below one of them changes (a folder
    input alone reruns it only when the folder's own mtime changes). Clinical folders are hashed
    by content up to :data:`CLINICAL_CONTENT_MAX_BYTES` per file, the others by size + mtime.

    Args:
        config: the workflow config.
        cohort: a cohort name.
        stage: as for :func:`user_folders`.

    Returns:
        ``{folder name: fingerprint}`` (empty for generated cohorts).
    """
    return {
        name: cached_folder_fingerprint(folder, CLINICAL_CONTENT_MAX_BYTES if name == "clinical" else 0)
        for name, folder in user_folders(config, cohort, stage).items()
    }


def with_user_folders_ancient(inputs: dict[str, str], config: dict, cohort: str) -> dict:
    """A job's inputs with every folder the user holds flagged ``ancient``.

    The fingerprints (:func:`data_fingerprints`) alone decide whether a folder's contents changed
    for the jobs that read it: the folder's own mtime would add reruns for changes that are none
    (a file deleted and written back with the same bytes, a clinical CSV downloaded again), and
    would rerun a job that lists a folder it does not read (NACC's conversion and its CSVs).

    Args:
        inputs: ``{name: path}`` as the rule lists them.
        config: the workflow config.
        cohort: a cohort name.

    Returns:
        The same mapping, the user's folders wrapped in ``ancient()``.
    """
    held = set(user_folders(config, cohort, "intake").values())
    if is_raw(config["cohorts"][cohort]) and not is_generated(config["cohorts"][cohort]):
        held |= set(raw_folders(config, cohort).values())
    return {name: ancient(path) if path in held else path for name, path in inputs.items()}


# --- project code ------------------------------------------------------------------------------------


def project_module_file(module: str, project_root: Path = REPO_ROOT) -> Path | None:
    """The file of a project module (``workflow.paths`` -> ``<root>/workflow/paths.py``).

    Args:
        module: a dotted module name.
        project_root: the folder holding the project's packages.

    Returns:
        The module's ``.py`` file or package ``__init__.py``; ``None`` when the name is not a module
        of a package under ``project_root`` (third-party, standard library, or an attribute).
    """
    parts = module.split(".")
    if not parts[0] or not (project_root / parts[0] / "__init__.py").is_file():
        return None
    base = project_root.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file() and (base.parent / "__init__.py").is_file():
        return base.with_suffix(".py")
    return None


def _package_of(path: Path, project_root: Path) -> str:
    """Dotted package that a file's relative imports start from ('' outside the project's packages)."""
    folder = path.parent
    parts: list[str] = []
    while folder != project_root and (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts) if folder == project_root else ""


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """Remove the docstring of the module and of every class and function (in place)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                # An empty body is not valid Python; `pass` keeps the text parseable.
                node.body = body[1:] or [ast.Pass()]
    return tree


@lru_cache(maxsize=None)
def _parsed(source: bytes, package: str, filename: str) -> tuple[str, tuple[str, ...]]:
    """Normalised text and imported module names of one module's source (cached by content).

    Args:
        source: the file's bytes (the cache key, so an edited file is never served stale).
        package: the dotted package relative imports start from.
        filename: for syntax error messages.

    Returns:
        ``(normalised, imports)``: the source re-written from its AST without docstrings (comments
        and formatting are not in the AST), and every absolute module name that an import
        statement anywhere in it may load (``from a import b`` gives ``a`` and ``a.b``).
    """
    tree = ast.parse(source, filename=filename)
    imports: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                # `import a.b.c` runs a, a.b and a.b.c.
                imports.extend(".".join(parts[:depth]) for depth in range(1, len(parts) + 1))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: max(len(package.split(".")) - node.level + 1, 0)] if package else []
                base = ".".join([*anchor, base] if base else anchor)
            parts = base.split(".")
            imports.extend(".".join(parts[:depth]) for depth in range(1, len(parts) + 1))
            imports.extend(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    # ast.unparse rather than ast.dump: the same AST, but a text that does not change with the
    # Python version (3.13 changed ast.dump's output, which would rerun every job after an upgrade).
    return ast.unparse(_strip_docstrings(tree)), tuple(dict.fromkeys(imports))


def code_closure(roots: Iterable[str], project_root: Path = REPO_ROOT) -> list[Path]:
    """Every project file that running ``roots`` imports, transitively, in a fixed order.

    Args:
        roots: dotted project modules (``workflow.train``; a package means its ``__init__``) or
            paths of Python files (a rule's script), relative to ``project_root`` or absolute.
        project_root: the folder holding the project's packages.

    Returns:
        The files, sorted by path: the roots, every project module they import (at module level or
        inside functions), and the ``__init__.py`` of each package on the way.

    Raises:
        ValueError: a root that is neither a project module nor an existing file.
    """
    queue: list[Path] = []
    for root in roots:
        if root.endswith(".py"):
            path = Path(root) if Path(root).is_absolute() else project_root / root
            if not path.is_file():
                raise ValueError(f"code_fingerprint: no file {path}")
        else:
            path = project_module_file(root, project_root)
            if path is None:
                raise ValueError(f"code_fingerprint: {root!r} is not a module of the project under {project_root}")
            queue.extend(_parent_packages(root, project_root))
        queue.append(path)
    seen: set[Path] = set()
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        _, imports = _parsed(path.read_bytes(), _package_of(path, project_root), str(path))
        for module in imports:
            found = project_module_file(module, project_root)
            if found is not None and found not in seen:
                queue.append(found)
    return sorted(seen)


def _parent_packages(module: str, project_root: Path) -> list[Path]:
    """The ``__init__.py`` files Python runs before ``module`` (``a/__init__.py`` for ``a.b``)."""
    parts = module.split(".")
    return [project_root.joinpath(*parts[:depth], "__init__.py") for depth in range(1, len(parts))]


def code_digest(*roots: str, project_root: Path = REPO_ROOT) -> str:
    """A value that changes whenever the code of ``roots`` changes, and not for comments or docs.

    Args:
        roots: what a rule runs: its script (``"workflow/scripts/intake_cohort.py"``) or the
            modules its shell command starts (``"workflow.train"``); see :func:`code_closure`.
        project_root: the folder holding the project's packages.

    Returns:
        ``"<n> project files, normalised AST: sha256 <hex>"``, a hash over each file of
        :func:`code_closure`: its relative path and its source re-written from its AST without
        docstrings.
    """
    if not roots:
        raise ValueError("code_fingerprint: name the rule's script or modules")
    files = code_closure(roots, project_root)
    digest = hashlib.sha256()
    for path in files:
        normalised, _ = _parsed(path.read_bytes(), _package_of(path, project_root), str(path))
        digest.update(_relative_name(path, project_root).encode() + b"\0" + normalised.encode() + b"\0")
    return f"{len(files)} project files, normalised AST: sha256 {digest.hexdigest()[:32]}"


def _relative_name(path: Path, project_root: Path) -> str:
    """``path`` relative to the project root, with / separators (absolute when outside it)."""
    return path.relative_to(project_root).as_posix() if path.is_relative_to(project_root) else str(path)


class CodeFingerprint:
    """A rule's ``code`` param: :func:`code_digest` of what the rule runs, computed when first needed.

    A param function, so that Snakemake computes it only for rules that have jobs (a cluster job's
    Snakemake process parses every rule but runs one), and once per process.

    Attributes:
        roots: what the rule runs, as the rule names it (read by ``workflow.check_envs``).
        project_root: the folder holding the project's packages.
    """

    def __init__(self, roots: tuple[str, ...], project_root: Path = REPO_ROOT) -> None:
        """Check the roots now (a typo fails when the rule file loads), compute nothing else.

        Args:
            roots: as for :func:`code_digest`.
            project_root: the folder holding the project's packages.
        """
        if not roots:
            raise ValueError("code_fingerprint: name the rule's script or modules")
        for root in roots:
            found = (project_root / root).is_file() if root.endswith(".py") else project_module_file(root, project_root)
            if not found:
                raise ValueError(f"code_fingerprint: {root!r} is neither a file nor a module of the project "
                                 f"under {project_root}")
        self.roots = roots
        self.project_root = project_root
        self._value: str | None = None

    def __call__(self, wildcards: object = None) -> str:
        """The fingerprint (Snakemake calls this with the job's wildcards, which do not matter).

        Args:
            wildcards: the job's wildcards (unused: the code is the same for every job of a rule).

        Returns:
            :func:`code_digest` of the roots, as first computed in this process.
        """
        if self._value is None:
            self._value = code_digest(*self.roots, project_root=self.project_root)
        return self._value

    @property
    def files(self) -> list[str]:
        """Every project file the roots import, transitively, relative to the project root."""
        return [_relative_name(path, self.project_root) for path in code_closure(self.roots, self.project_root)]

    def __repr__(self) -> str:
        """How the rule wrote it, e.g. ``code_fingerprint('workflow.train',)`` (in error messages)."""
        return f"code_fingerprint{self.roots!r}"


def code_fingerprint(*roots: str, project_root: Path = REPO_ROOT) -> CodeFingerprint:
    """The ``code`` param of a rule: changes when the code it runs changes, not for comments or docs.

    Args:
        roots: what the rule runs: its script (``"workflow/scripts/intake_cohort.py"``, relative to
            the project root) or the modules its shell command starts (``"workflow.train"``).
        project_root: the folder holding the project's packages.

    Returns:
        A param function giving :func:`code_digest` of the roots (see :class:`CodeFingerprint`).
    """
    return CodeFingerprint(tuple(roots), project_root)
