"""Validate the workflow config before any rule is defined.

The top-level schema fixes which sections exist; each stage's section has its own schema in
``workflow/schemas/<section>.schema.yaml`` (so a stage owns its settings and their defaults).
Defaults from the schemas are filled into ``config`` in place.
"""

from __future__ import annotations

from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

SCHEMA_DIR = Path(__file__).parent / "schemas"
DEMO_HINT = "To run on the embedded synthetic cohorts instead, use: snakemake --configfile config/demo.yaml"


def section_schema(section: str) -> Path:
    return SCHEMA_DIR / f"{section}.schema.yaml"


def validate_config(config: dict) -> None:
    """Validate ``config`` against the top-level and per-section schemas, then check data paths.

    Raises ``WorkflowError`` naming the offending key and what was expected.
    """
    validate_schemas(config)
    check_real_cohort_paths(config)


def validate_schemas(config: dict) -> None:
    """Validate ``config`` against the schemas and fill in their defaults, without looking for the
    cohorts' data (for tools that only need the settings, such as the benchmarks)."""
    _validate_part(config, SCHEMA_DIR / "config.schema.yaml", where="config")
    for section in sorted(config):
        if section_schema(section).exists():
            config[section] = config[section] or {}
            _validate_part(config[section], section_schema(section), where=f"config.{section}")


def _validate_part(part: dict, schema: Path, where: str) -> None:
    try:
        validate(part, str(schema), set_default=True)
    except WorkflowError as error:
        raise WorkflowError(f"Invalid configuration in {where} (schema {schema.name}):\n{error}") from None


def check_real_cohort_paths(config: dict) -> None:
    """Stop at once when a real or raw cohort's data folders are missing."""
    from workflow.convert import expected_folders

    missing = []
    for name, cohort in config["cohorts"].items():
        if cohort["source"] in ("synthetic", "synthetic_raw"):
            continue
        if not Path(cohort["root"]).exists():
            missing.append(f"  cohort {name}: data folder '{cohort['root']}' (config cohorts.{name}.root) does not exist")
            continue
        for folder, holds in expected_folders(cohort["source"], cohort["format"]).items():
            if not (Path(cohort["root"]) / folder).is_dir():
                missing.append(f"  cohort {name} (source: {cohort['source']}, format: {cohort['format']}): "
                               f"no folder '{folder}' under '{cohort['root']}' ({holds})")
    if missing:
        raise WorkflowError(
            "Cohort data not found:\n" + "\n".join(missing)
            + "\nPut each cohort's files there (README, 'Bringing your own data'), "
            "or point cohorts.<name>.root at them.\n" + DEMO_HINT
        )
