"""The header bank file: frozen text-encoder vectors of every column header (docs/interfaces.md section 5).

A safetensors file with one float32 tensor ``embeddings`` [N, D] and string metadata ``headers``
(JSON list of the N header texts, row order), ``encoder``, ``encoder_sha256``, ``pooling``,
``max_length`` and ``dim``. The header stage writes it (:func:`save_header_bank`); training reads
it (:func:`load_header_bank`) and maps each column's header text to its row, the column id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ["EMBEDDINGS_KEY", "HeaderBank", "load_header_bank", "save_header_bank"]

EMBEDDINGS_KEY = "embeddings"
METADATA_KEYS = ("headers", "encoder", "encoder_sha256", "pooling", "max_length", "dim")


@dataclass
class HeaderBank:
    """Header vectors and their texts.

    Attributes:
        embeddings: float32 [N, D], row i = vector of ``headers[i]``.
        headers: the N header texts.
        metadata: encoder identity: encoder, encoder_sha256, pooling, max_length (int), dim (int).
    """

    embeddings: torch.Tensor
    headers: list[str]
    metadata: dict

    def column_ids(self, header_texts: list[str]) -> list[int]:
        """Rows of ``header_texts`` in the bank; KeyError naming the first text that is absent."""
        index = {text: row for row, text in enumerate(self.headers)}
        missing = [text for text in header_texts if text not in index]
        if missing:
            raise KeyError(
                f"header text(s) not in the header bank (encoder {self.metadata.get('encoder')}): {missing}; "
                "rerun the embed_headers rule after changing column headers"
            )
        return [index[text] for text in header_texts]


def save_header_bank(
    path: str | Path, embeddings: torch.Tensor, headers: list[str], *, encoder: str, encoder_sha256: str,
    pooling: str, max_length: int,
) -> None:
    """Write a header bank: ``embeddings`` [N, D] for the N distinct ``headers`` plus the encoder identity."""
    if embeddings.ndim != 2 or embeddings.shape[0] != len(headers):
        raise ValueError(f"embeddings must be [N, D] with N = {len(headers)} headers, got {tuple(embeddings.shape)}")
    if len(set(headers)) != len(headers):
        raise ValueError("header texts in a header bank must be distinct")
    metadata = {
        "headers": json.dumps(list(headers)), "encoder": encoder, "encoder_sha256": encoder_sha256,
        "pooling": pooling, "max_length": str(int(max_length)), "dim": str(int(embeddings.shape[1])),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({EMBEDDINGS_KEY: embeddings.detach().float().contiguous().cpu()}, str(path), metadata=metadata)


def load_header_bank(path: str | Path) -> HeaderBank:
    """Read a header bank written by :func:`save_header_bank`; ValueError naming the file if malformed."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        if EMBEDDINGS_KEY not in handle.keys():
            raise ValueError(
                f"{path}: no tensor {EMBEDDINGS_KEY!r} (expected a header bank, docs/interfaces.md section 5)"
            )
        embeddings = handle.get_tensor(EMBEDDINGS_KEY)
    absent = [key for key in METADATA_KEYS if key not in metadata]
    if absent:
        raise ValueError(f"{path}: header bank metadata lacks {absent} (expected {list(METADATA_KEYS)})")
    headers = json.loads(metadata["headers"])
    if embeddings.ndim != 2 or embeddings.shape[0] != len(headers):
        raise ValueError(f"{path}: embeddings {tuple(embeddings.shape)} do not match {len(headers)} header texts")
    metadata = {key: metadata[key] for key in METADATA_KEYS if key != "headers"}
    metadata["max_length"] = int(metadata["max_length"])
    metadata["dim"] = int(metadata["dim"])
    return HeaderBank(embeddings=embeddings, headers=headers, metadata=metadata)
