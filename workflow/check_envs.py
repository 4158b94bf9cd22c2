"""Static check of the per-rule conda environments (``envs/*.yaml``), without conda.

Conda cannot run here (no conda, no channels), so environments are checked, not solved:

* each env file: valid YAML, only the keys conda accepts (``name, channels, dependencies,
  variables``), a non-empty channel list without Anaconda's ``defaults``, every conda dependency
  a valid MatchSpec (py-rattler) and every ``pip:`` entry a valid PEP 508 requirement
  (``packaging``), a ``pip`` dependency when there is a ``pip:`` section, a version on every
  dependency, and versions that admit the ones the tested project environment runs;
* each rule that runs code names an env file that exists, and that env provides every third-party
  distribution its code imports. The code of a rule is found from the rule itself (its
  ``script:``, the ``python -m`` / ``torchrun -m`` modules and console scripts of its ``shell:``,
  and the roots of its ``code`` param, ``code_fingerprint(...)``); imports are followed with
  ``ast`` through the project's own packages, and import names are mapped to distributions with
  ``importlib.metadata.packages_distributions()``. Nothing is listed by hand.

Usage: ``python -m workflow.check_envs [--snakefile Snakefile] [--configfile config/demo.yaml]``
Exit code 0 when every env is fine, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import re
import shlex
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from rattler import MatchSpec, Version, VersionSpec

from workflow.smk import REPO_ROOT

ALLOWED_TOP_LEVEL_KEYS = {"name", "channels", "dependencies", "variables"}
# PyPI distributions that conda-forge ships under another name (PEP 503-normalised on both sides).
CONDA_FORGE_NAMES = {
    "torch": {"pytorch", "pytorch-cpu", "pytorch-gpu"},
    "matplotlib": {"matplotlib", "matplotlib-base"},
    "tables": {"pytables"},
    "opencv-python": {"opencv", "py-opencv"},
    "msgpack": {"msgpack-python"},
}
PYTHON_PACKAGE = "python"  # the conda package of the interpreter (its version is sys.version_info)
# Installer tooling that needs no pin: it does not change what the rule's code runs with.
UNPINNED_TOOLS = {"pip"}
# Where a new command starts in a shell string: ; | || && & ( ) $( ` and newlines, but not the
# & of a redirection such as 2>&1 or &>file.
SHELL_SEPARATORS = re.compile(r"\|\||&&|[;|()`\n]|\$\(|(?<![<>])&(?!>)")


def normalize(name: str) -> str:
    """PEP 503 normalised distribution name (``PyYAML`` -> ``pyyaml``, ``a_b.c`` -> ``a-b-c``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class EnvFile:
    """What an env file provides, after parsing: PEP 503 names mapped to the spec text that pins them."""

    path: Path
    conda: dict[str, str] = field(default_factory=dict)  # conda package name -> spec text
    pip: dict[str, str] = field(default_factory=dict)  # distribution name -> requirement text

    def provides(self, distribution: str) -> bool:
        """Whether this env installs the PyPI ``distribution`` (by its conda-forge or PyPI name)."""
        name = normalize(distribution)
        return name in self.pip or bool(CONDA_FORGE_NAMES.get(name, {name}) & set(self.conda))


@dataclass
class RuleCode:
    """The code a rule runs: Python files, modules it starts with ``-m``, console scripts it calls."""

    rule: str
    rule_file: Path
    env: Path | None
    python_files: list[Path]
    console_scripts: list[str]


# --- env files ---------------------------------------------------------------------------------------


def installed_version(distribution: str) -> str | None:
    """Version of ``distribution`` in the running (tested) environment, or ``None``."""
    if normalize(distribution) == PYTHON_PACKAGE:
        return ".".join(str(part) for part in sys.version_info[:3])
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _conda_to_pypi(conda_name: str) -> str:
    for pypi_name, conda_names in CONDA_FORGE_NAMES.items():
        if conda_name in conda_names:
            return pypi_name
    return conda_name


def check_env_file(path: Path, check_versions: bool = True, label: str | None = None) -> tuple[EnvFile | None, list[str]]:
    """Parse and check one env file.

    Args:
        path: the ``envs/<family>.yaml`` file.
        check_versions: also require that pins admit the versions installed in this environment.
        label: how messages name the file (default: ``path``).

    Returns:
        ``(env, problems)``: the parsed env (``None`` when unreadable) and one message per problem.
    """
    where = label or str(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        return None, [f"{where}: not readable YAML ({error})"]
    if not isinstance(document, dict):
        return None, [f"{where}: expected a mapping with channels/dependencies, got {type(document).__name__}"]
    problems = []
    unknown = sorted(set(document) - ALLOWED_TOP_LEVEL_KEYS)
    if unknown:
        problems.append(f"{where}: unknown top-level key(s) {unknown}; allowed: {sorted(ALLOWED_TOP_LEVEL_KEYS)}")
    channels = document.get("channels")
    if not channels or not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        problems.append(f"{where}: 'channels' must be a non-empty list of channel names (e.g. [conda-forge, nodefaults])")
    elif "defaults" in channels:
        problems.append(f"{where}: channel 'defaults' is not allowed (use conda-forge and add nodefaults)")
    dependencies = document.get("dependencies")
    if not isinstance(dependencies, list) or not dependencies:
        problems.append(f"{where}: 'dependencies' must be a non-empty list")
        return None, problems
    env = EnvFile(path)
    has_pip_section = False
    for index, entry in enumerate(dependencies):
        label = f"{where}: dependencies[{index}]"
        if isinstance(entry, str):
            problems.extend(_add_conda_dependency(env, entry, label, check_versions))
        elif isinstance(entry, dict) and set(entry) == {"pip"} and isinstance(entry["pip"], list):
            has_pip_section = True
            for pip_index, requirement in enumerate(entry["pip"]):
                problems.extend(_add_pip_dependency(env, requirement, f"{label}.pip[{pip_index}]", check_versions))
        else:
            problems.append(f"{label}: expected a conda spec string or {{pip: [...]}}, got {entry!r}")
    if has_pip_section and "pip" not in env.conda:
        problems.append(f"{where}: has a pip: section but no 'pip' conda dependency to install it with")
    return env, problems


def _add_conda_dependency(env: EnvFile, text: str, label: str, check_versions: bool) -> list[str]:
    try:
        spec = MatchSpec(text)
    except Exception as error:  # rattler raises its own InvalidMatchSpecError
        return [f"{label} {text!r}: not a valid conda MatchSpec ({error})"]
    name = spec.name.normalized
    env.conda[name] = text
    if spec.version is None and name not in UNPINNED_TOOLS:
        return [f"{label} {text!r}: no version; pin it (e.g. '{name} >=X.Y')"]
    installed = installed_version(_conda_to_pypi(name))
    if check_versions and installed is not None and spec.version is not None:
        public_version = installed.split("+")[0]  # conda versions have no local part (+cpu)
        if not VersionSpec(str(spec.version)).matches(Version(public_version)):
            return [f"{label} {text!r}: excludes {installed}, the version the tested project environment runs"]
    return []


def _add_pip_dependency(env: EnvFile, text: object, label: str, check_versions: bool) -> list[str]:
    if not isinstance(text, str):
        return [f"{label}: expected a requirement string, got {text!r}"]
    try:
        requirement = Requirement(text)
    except InvalidRequirement as error:
        return [f"{label} {text!r}: not a valid PEP 508 requirement ({error})"]
    empty = [str(spec) for spec in requirement.specifier if not spec.version.strip()]
    if empty:
        return [f"{label} {text!r}: not a valid PEP 508 requirement (no version after {empty[0]!r})"]
    env.pip[normalize(requirement.name)] = text
    if not requirement.specifier and requirement.url is None:
        return [f"{label} {text!r}: no version; pin it (e.g. '{requirement.name}==X.Y')"]
    installed = installed_version(requirement.name)
    if check_versions and installed is not None and not requirement.specifier.contains(installed, prereleases=True):
        return [f"{label} {text!r}: excludes {installed}, the version the tested project environment runs"]
    return []


# --- the code each rule runs ---------------------------------------------------------------------------


def load_rules(snakefile: Path, configfiles: list[Path]) -> list[RuleCode]:
    """Load the workflow with Snakemake (no jobs run) and collect each rule's env and code.

    Rules that run nothing (``rule all``) are left out.
    """
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    project_root = snakefile.resolve().parent
    rules = []
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(configfiles=[path.resolve() for path in configfiles]),
            snakefile=snakefile.resolve(),
            workdir=project_root,
        )
        # Snakemake 9 has no public listing of a rule's conda env and code; the Workflow object
        # behind the API holds them (snakemake is pinned in pyproject.toml).
        for rule in workflow_api._workflow.rules:
            shell = rule.shellcmd or ""
            if not (shell or rule.script):
                continue
            basedir = Path(rule.basedir)
            env = (basedir / rule.conda_env).resolve() if isinstance(rule.conda_env, str) else None
            files: list[Path] = []
            if rule.script:
                files.append((basedir / rule.script).resolve())
            for module in re.findall(r"(?:^|\s)-m\s+([A-Za-z_][\w.]*)", shell):
                files.extend(module_files(module, project_root) or [])
            # The `code` param (workflow.fingerprints.code_fingerprint) names what the rule runs.
            for value in rule.params:
                for root in getattr(value, "roots", ()):
                    if root.endswith(".py"):
                        files.append((project_root / root).resolve())
                    else:
                        files.extend(module_files(root, project_root) or [])
            rules.append(RuleCode(rule.name, Path(rule.snakefile), env, _unique(files), command_words(shell)))
    return rules


def command_words(shell: str) -> list[str]:
    """Words in command position of a shell command: first word of each command, and after ``--``.

    ``python -m workflow.gpu_slots 2 -- torchrun --standalone ...`` gives ``[python, torchrun]``.
    """
    words = []
    for segment in SHELL_SEPARATORS.split(shell):
        try:
            tokens = shlex.split(segment)
        except ValueError:
            tokens = segment.split()
        tokens = [token for token in tokens if not re.fullmatch(r"\w+=.*", token)]  # VAR=value prefixes
        if tokens:
            words.append(tokens[0])
        words.extend(tokens[index + 1] for index, token in enumerate(tokens[:-1]) if token == "--")
    return _unique(words)


def module_name_of(path: Path) -> str:
    """Dotted module name of a file inside a package tree (``.../workflow/x.py`` -> ``workflow.x``)."""
    path = path.resolve()
    parts = [] if path.name == "__init__.py" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").exists():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts)


def module_files(module: str, project_root: Path) -> list[Path] | None:
    """Files Python runs to import a project ``module`` (its package ``__init__``s first).

    Returns ``None`` when ``module`` is not part of the project (third-party or standard library).
    """
    parts = module.split(".")
    files: list[Path] = []
    for depth in range(1, len(parts) + 1):
        base = project_root.joinpath(*parts[:depth])
        if (base / "__init__.py").is_file():
            files.append(base / "__init__.py")
        elif base.with_suffix(".py").is_file():
            files.append(base.with_suffix(".py"))
            break  # the remaining parts are attributes of this module
        else:
            break  # an attribute of the package, not a submodule
    return files or None


@dataclass(frozen=True)
class Import:
    """One ``import`` statement: the module it names, and where."""

    module: str
    file: Path
    line: int


def imports_of(path: Path) -> list[Import]:
    """Absolute module names imported anywhere in ``path`` (functions included).

    Imports guarded by ``if TYPE_CHECKING:`` or by ``try/except ImportError`` are optional and left out.
    ``from package import name`` yields both ``package.name`` and ``package`` (``name`` may be
    a submodule or an attribute; the caller keeps whichever is a module).
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name_of(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: list[Import] = []
    for node in _required_nodes(tree):
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, path, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(Import(base, path, node.lineno))
            found.extend(Import(f"{base}.{alias.name}", path, node.lineno) for alias in node.names if alias.name != "*")
    return found


def _required_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """All nodes except those under ``if TYPE_CHECKING:`` and ``try:`` bodies that catch ImportError."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Try) and any(
            handler.type is not None and re.search(r"\b(ImportError|ModuleNotFoundError)\b", ast.unparse(handler.type))
            for handler in node.handlers
        ):
            stack.extend([*node.handlers, *node.orelse, *node.finalbody])
            continue
        stack.extend(ast.iter_child_nodes(node))


def third_party_imports(files: Iterable[Path], project_root: Path) -> dict[str, Import]:
    """Top-level names of non-project, non-stdlib modules imported by ``files`` and the project code they import.

    Returns ``{top_level_name: first Import seen}`` (the place is reported in messages).
    """
    queue = list(files)
    seen: set[Path] = set()
    external: dict[str, Import] = {}
    while queue:
        path = queue.pop(0)
        if path in seen or path.suffix != ".py":
            continue
        seen.add(path)
        for found in imports_of(path):
            top = found.module.split(".")[0]
            if not top or top in sys.stdlib_module_names:
                continue
            project_files = module_files(found.module, project_root)
            if project_files is not None:
                queue.extend(project_files)
            else:
                external.setdefault(top, found)
    return external


@lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@lru_cache(maxsize=1)
def _console_script_distributions() -> dict[str, str]:
    """Console-script name -> the distribution that installs it (``torchrun`` -> ``torch``)."""
    scripts = {}
    for distribution in importlib.metadata.distributions():
        for entry_point in distribution.entry_points:
            if entry_point.group == "console_scripts":
                scripts.setdefault(entry_point.name, distribution.metadata["Name"])
    return scripts


def check_rules(
    rules: list[RuleCode], project_root: Path, check_versions: bool = True, verbose: bool = False
) -> list[str]:
    """Check every rule's env file and that it provides what the rule's code imports.

    With ``verbose``, print what was found for each rule (its env, code files and imports).
    """
    problems: list[str] = []
    envs: dict[Path, EnvFile | None] = {}
    for rule in rules:
        label = f"rule {rule.rule} ({_relative(rule.rule_file, project_root)})"
        if rule.env is None:
            problems.append(f"{label}: no conda: env file (every rule that runs code names envs/<family>.yaml)")
            continue
        if not rule.env.is_file():
            problems.append(f"{label}: conda env {_relative(rule.env, project_root)} does not exist")
            continue
        if rule.env not in envs:
            envs[rule.env], env_problems = check_env_file(rule.env, check_versions, _relative(rule.env, project_root))
            problems.extend(env_problems)
        env = envs[rule.env]
        if env is None:
            continue
        env_label = _relative(rule.env, project_root)
        if rule.python_files and PYTHON_PACKAGE not in env.conda:
            problems.append(f"{label}: runs Python but {env_label} has no 'python' dependency")
        for word in rule.console_scripts:
            distribution = _console_script_distributions().get(word)
            if distribution and not env.provides(distribution):
                problems.append(f"{label}: its shell command runs '{word}' (from {distribution}) but {env_label} does not provide {distribution}")
        imported = third_party_imports(rule.python_files, project_root)
        if verbose:
            files = ", ".join(_relative(path, project_root) for path in rule.python_files)
            print(f"rule {rule.rule}: env {env_label}; code {files}; commands {rule.console_scripts}; imports {sorted(imported)}")
        for top, found in sorted(imported.items()):
            distributions = _packages_distributions().get(top)
            where = f"{_relative(found.file, project_root)}:{found.line}"
            if not distributions:
                problems.append(f"{label}: {where} imports '{found.module}', which no installed distribution provides")
            elif not any(env.provides(name) for name in distributions):
                problems.append(
                    f"{label}: {where} imports '{found.module}' (distribution {' or '.join(distributions)}) "
                    f"but {env_label} does not provide it"
                )
    env_dir = project_root / "envs"
    for unused in sorted(set(env_dir.glob("*.yaml")) - set(envs)):
        _, env_problems = check_env_file(unused, check_versions, _relative(unused, project_root))
        problems.extend(env_problems)
    return problems


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def _unique(items: Iterable) -> list:
    return list(dict.fromkeys(items))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints one line per problem."""
    parser = argparse.ArgumentParser(prog="python -m workflow.check_envs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--snakefile", type=Path, default=REPO_ROOT / "Snakefile")
    parser.add_argument(
        "--configfile", type=Path, action="append",
        help="config overlay(s) to load the workflow with (default: config/demo.yaml next to the Snakefile)",
    )
    parser.add_argument("--no-version-check", action="store_true", help="do not compare pins with installed versions")
    parser.add_argument("--verbose", action="store_true", help="print each rule's env, code files and imports")
    args = parser.parse_args(argv)
    project_root = args.snakefile.resolve().parent
    configfiles = args.configfile or [project_root / "config" / "demo.yaml"]
    rules = load_rules(args.snakefile, configfiles)
    problems = check_rules(rules, project_root, check_versions=not args.no_version_check, verbose=args.verbose)
    for problem in problems:
        print(problem)
    env_count = len({rule.env for rule in rules if rule.env})
    if problems:
        print(f"check_envs: {len(problems)} problem(s) in the envs of {len(rules)} rule(s)", file=sys.stderr)
        return 1
    print(f"check_envs: {len(rules)} rule(s), {env_count} env file(s): all fine", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
