"""The header bank file: frozen text-encoder vectors of every column header (docs/interfaces.md section 5).

A safetensors file with one float32 tensor ``embeddings`` [N, D] and string metadata ``headers``
(JSON list of the N header texts, row order), ``encoder``, ``encoder_sha256``, ``pooling``,
``max_length`` and ``dim``. The header stage writes it (:func:`save_header_bank`); training reads
it (:func:`load_header_bank`) and maps each column's header text to its row, the column id.

:func:`check_safetensors_file` checks any safetensors file's layout (the header bank, a text
encoder's ``model.safetensors``) before a library loads it, so that a truncated or damaged file
stops with a message naming it instead of a bare library traceback.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

__all__ = ["EMBEDDINGS_KEY", "HeaderBank", "SafetensorsFileError", "check_safetensors_file", "load_header_bank",
           "save_header_bank"]

EMBEDDINGS_KEY = "embeddings"
METADATA_KEYS = ("headers", "encoder", "encoder_sha256", "pooling", "max_length", "dim")
# Bytes per element of the safetensors dtypes whose size is whole bytes (others are left to the library).
SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "U16": 2, "I16": 2, "F16": 2,
    "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8,
}
SAFETENSORS_LAYOUT = (
    "a complete safetensors file: an 8-byte little-endian header length N, N bytes of JSON header, then "
    "exactly the tensor bytes the header lists"
)


class SafetensorsFileError(ValueError):
    """A safetensors file is truncated or damaged; the message names the file and what was expected."""


def check_safetensors_file(path: str | Path) -> dict[str, dict]:
    """Check that ``path`` is a whole safetensors file, reading its header only (cheap for any size).

    Checks the header length against the file size, the JSON header, each tensor's byte range
    ([begin, end) inside the data area, end - begin = elements x dtype size), that the tensors end
    exactly at the end of the file, and finally that safetensors itself opens the file.

    Returns:
        The header's tensor entries by name (``dtype``, ``shape``, ``data_offsets``).

    Raises:
        SafetensorsFileError: naming ``path``, what is wrong and what was expected.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    size = path.stat().st_size

    def damaged(problem: str) -> SafetensorsFileError:
        return SafetensorsFileError(f"{path} is damaged: {problem}; expected {SAFETENSORS_LAYOUT}")

    with open(path, "rb") as stream:
        if size < 8:
            raise damaged(f"the file is {size} bytes, shorter than the 8-byte header length")
        (header_length,) = struct.unpack("<Q", stream.read(8))
        if 8 + header_length > size:
            raise damaged(f"the header length says {header_length} bytes of JSON header, but only {size - 8} "
                          f"bytes follow (the file is {size} bytes: truncated, or not a safetensors file)")
        try:
            header = json.loads(stream.read(header_length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise damaged(f"the {header_length}-byte header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise damaged("the header is not a JSON object")
    tensors = {name: entry for name, entry in header.items() if name != "__metadata__"}
    data_start, data_end = 8 + header_length, 0
    for name, entry in tensors.items():
        try:
            begin, end = (int(offset) for offset in entry["data_offsets"])
            shape = [int(n) for n in entry["shape"]]
            dtype = str(entry["dtype"])
        except (KeyError, TypeError, ValueError):
            raise damaged(f"tensor {name!r} has no valid dtype, shape and data_offsets in the header") from None
        if not 0 <= begin <= end:
            raise damaged(f"tensor {name!r} has byte range [{begin}, {end})")
        needed = math.prod(shape) * SAFETENSORS_DTYPE_BYTES.get(dtype, 0)
        if dtype in SAFETENSORS_DTYPE_BYTES and end - begin != needed:
            raise damaged(f"tensor {name!r} ({dtype} {shape}) needs {needed} bytes, its byte range [{begin}, {end}) "
                          f"holds {end - begin}")
        data_end = max(data_end, end)
    expected_size = data_start + data_end
    if size < expected_size:
        raise damaged(f"the header lists {len(tensors)} tensors ending at byte {expected_size}, but the file is "
                      f"{size} bytes ({expected_size - size} bytes missing: truncated, e.g. an interrupted copy)")
    if size > expected_size:
        raise damaged(f"the file is {size} bytes, {size - expected_size} more than the tensors the header lists "
                      f"(which end at byte {expected_size})")
    try:  # the library's own checks (contiguous, non-overlapping ranges, known dtypes)
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except SafetensorError as error:
        raise damaged(f"safetensors cannot open it ({error})") from None
    return tensors


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
    try:
        check_safetensors_file(path)
    except SafetensorsFileError as error:
        raise SafetensorsFileError(f"header bank {error}; rerun the embed_headers rule") from None
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
