"""Which header encoder, where it is, and which header texts it embeds: what the DAG needs to plan
the header stage, without loading torch or transformers (every ``snakemake`` call imports this).

:mod:`workflow.headers` loads the encoder and embeds; this module only names and locates it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from workflow import paths
from workflow.columns import all_header_texts, resolve_columns_path
from workflow.settings import HeaderEmbeddingSettings, SettingsError, plain
from workflow.smk import REPO_ROOT

__all__ = [
    "EXPECTED_FOLDER", "EncoderNotFoundError", "IDENTITY_FILES", "POOLINGS", "TOKENIZER_FILES", "WEIGHT_FILES",
    "encoder_stamp", "encoder_supplied", "header_embedding_settings", "header_texts",
    "paper_similarity", "resolve_encoder_path",
]

POOLINGS = ("mean", "cls")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
# Files whose bytes define the encoder (and so its sha256); any present is hashed.
IDENTITY_FILES = ("config.json", *WEIGHT_FILES, "tokenizer.json", "vocab.txt", "tokenizer_config.json",
                  "special_tokens_map.json")
EXPECTED_FOLDER = (
    "a folder in the Hugging Face layout with config.json, the weights (model.safetensors or "
    "pytorch_model.bin) and the tokenizer (tokenizer.json or vocab.txt)"
)


class EncoderNotFoundError(FileNotFoundError):
    """The configured text encoder is not where config says, or is not a usable model folder."""


def header_texts(config: dict) -> list[str]:
    """Every header text of every cohort in the configured column definitions file (``tables.columns``).

    In file order, each once. When the config has no ``tables`` section the file is the tables
    schema's default.
    """
    tables = config.get("tables") or {}
    columns = tables.get("columns") or _schema_default("tables", "columns")
    return all_header_texts(resolve_columns_path(columns))


def paper_similarity() -> dict[str, float]:
    """The paper's mean pairwise header similarity per encoder, kept with its Table 2 numbers."""
    document = yaml.safe_load((REPO_ROOT / paths.PAPER_TABLE2).read_text())
    return {str(name): float(value) for name, value in document["header_similarity"].items()}


def encoder_supplied(headers_config: dict, encoder: str) -> bool:
    """Whether encoder ``encoder``'s folder (or package) exists. An absent alternative encoder
    leaves its table row empty; a folder that exists but is incomplete or damaged still stops
    the embed_headers rule with a message (:func:`check_encoder_folder`)."""
    try:
        return resolve_encoder_path(headers_config["encoders"][encoder]["path"]).is_dir()
    except EncoderNotFoundError:
        return False


def _schema_default(section: str, key: str):
    # read directly (not through workflow.config_checks, which needs Snakemake inside the rule's env)
    schema = yaml.safe_load((Path(__file__).parent / "schemas" / f"{section}.schema.yaml").read_text())
    return schema["properties"][key]["default"]


def header_embedding_settings(config: dict, encoder: str) -> HeaderEmbeddingSettings:
    """The settings of the ``encoder`` header vectors (rule embed_headers).

    Args:
        config: the validated config (its ``headers`` section).
        encoder: a key of ``headers.encoders`` (the ``{encoder}`` wildcard); an entry may override
            ``pooling`` and ``max_length``.
    """
    section = config["headers"]
    if encoder not in section["encoders"]:
        raise SettingsError(f"header encoder {encoder!r} is not configured under headers.encoders "
                            f"(have: {', '.join(section['encoders'])})")
    entry = section["encoders"][encoder]
    values = {"encoder": encoder, "path": entry["path"], "pooling": entry.get("pooling", section["pooling"]),
              "max_length": entry.get("max_length", section["max_length"]), "stamp": encoder_stamp(entry["path"]),
              "batch_size": section["batch_size"], "cache_dir": section["cache_dir"]}
    return HeaderEmbeddingSettings.from_params(plain(values), source=f"headers.encoders.{encoder}")


def resolve_encoder_path(spec: str) -> Path:
    """The model folder named by ``spec``: a path, or ``package:<name>`` for a packaged model."""
    if spec.startswith("package:"):
        package = spec.split(":", 1)[1]
        found = importlib.util.find_spec(package)
        if found is None or found.origin is None:
            raise EncoderNotFoundError(
                f"header encoder {spec!r}: Python package {package!r} is not installed "
                f"(expected it to ship {EXPECTED_FOLDER})"
            )
        root = Path(found.origin).parent
        return root / "model" if (root / "model" / "config.json").exists() else root
    return Path(spec).expanduser()



def encoder_stamp(spec: str) -> str:
    """Cheap fingerprint (file names, sizes, modification times) of an encoder folder; "missing" if absent."""
    try:
        folder = resolve_encoder_path(spec)
    except EncoderNotFoundError:
        return "missing"
    parts = []
    for name in IDENTITY_FILES:
        path = folder / name
        if path.is_file():
            stat = path.stat()
            parts.append(f"{name}:{stat.st_size}:{int(stat.st_mtime)}")
    return ";".join(parts) or "missing"
