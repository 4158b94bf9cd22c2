"""The self-supervised Table 1 baselines (MMCL, TIP, ViTa): counts, losses, loading, per-cohort pipeline.

Paper-size counts run on the meta device; numeric checks use the tiny configuration on CPU; the
pipeline checks run the training stage's own functions in-process on the small inputs of
tests/test_train_helpers.py (one killed run goes through the command line, as the rule runs it).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, TINY_CONFIG, VENV_ON_PATH
from safetensors.torch import load_file
from test_train_helpers import ENCODER, write_training_inputs

from model import TableSpec, build_model, list_variants, variant_info
from model.ssl_baselines.tip import masked_reconstruction_loss
from model.checkpoints import CheckpointError
from model.ssl_baselines.vita import sincos_positions
from workflow import paths, train
from workflow import settings as settings_stage

torch.set_num_threads(1)

SSL = ["mmcl", "tip", "vita"]
_tiny = yaml.safe_load(TINY_CONFIG.read_text())
TINY = _tiny["model"]  # resnet_depth 10, widths 4/8/8/16, embed_dim 32, 1 layer, 4 heads, projection 16
# ViTa's tabular ViT has sizes of its own (not in the model section): small ones for CPU tests
TINY_VITA = {"tabular_dim": 16, "tabular_layers": 1, "tabular_heads": 2}
TINY_IMAGE = (16, 16, 16)
PAPER = yaml.safe_load((REPO / "config.yaml").read_text())
TABLE = TableSpec(tuple(f"column_{j}" for j in range(6)), (0, 2, 0, 3, 0, 0))


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def continuous_table(columns: int) -> TableSpec:
    return TableSpec(tuple(f"c{j}" for j in range(columns)), (0,) * columns)


def paper_model(name: str, stage: str, table: TableSpec):
    with torch.device("meta"):
        return build_model(name, table=table, stage=stage, **PAPER["model"])


def tiny_model(name: str, stage: str, seed: int = 0, table: TableSpec = TABLE):
    torch.manual_seed(seed)
    return build_model(name, table=table, stage=stage, **TINY, **(TINY_VITA if name == "vita" else {}))


def make_batch(size: int, seed: int = 0, table: TableSpec = TABLE) -> dict[str, torch.Tensor]:
    """Image [B,1,16,16,16]; a corrupted view (values, missing) and the original row, codes in categorical cells."""
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(size, table.num_columns, generator=gen)
    for column, cardinality in enumerate(table.cardinalities):
        if cardinality:
            values[:, column] = torch.randint(0, cardinality, (size,), generator=gen).float()
    missing = torch.rand(size, table.num_columns, generator=gen) < 0.15
    values[missing] = 0.0
    view = values.clone()
    view[:, 0] = view[torch.randperm(size, generator=gen), 0]  # one corrupted column
    return {"image": torch.rand(size, 1, *TINY_IMAGE, generator=gen), "values": view, "missing": missing.clone(),
            "original_values": values, "original_missing": missing}


def inputs(model, batch: dict, names: str = "pretrain_input_names") -> list[torch.Tensor]:
    return [batch[name] for name in getattr(model, names)]


def clip_by_hand(image_z: torch.Tensor, tabular_z: torch.Tensor, temperature: float) -> torch.Tensor:
    """Half the mean -log p(own row | image) plus half the mean -log p(own image | row)."""
    a = image_z / image_z.norm(dim=1, keepdim=True)
    b = tabular_z / tabular_z.norm(dim=1, keepdim=True)
    similarity = a @ b.t() / temperature
    rows = -torch.stack([similarity[i, i] - similarity[i].logsumexp(0) for i in range(len(a))]).mean()
    columns = -torch.stack([similarity[i, i] - similarity[:, i].logsumexp(0) for i in range(len(a))]).mean()
    return 0.5 * rows + 0.5 * columns


# --- registry and paper sizes (meta device) ---------------------------------------------------------


def test_registry_family_and_inputs():
    assert list_variants("ssl_per_cohort") == SSL
    expected = {"mmcl": (("image",), ("image", "values")),
                "tip": (("image", "values", "missing"),
                        ("image", "values", "missing", "original_values", "original_missing")),
                "vita": (("image", "values", "missing"), ("image", "values", "missing"))}
    for name in SSL:
        info = variant_info(name)
        assert info.family == "ssl_per_cohort" and info.pretrains_per_cohort and not info.pretrains_across_tables
        assert (info.input_names, info.pretrain_input_names) == expected[name]
        for stage in ("pretrain", "finetune"):
            model = tiny_model(name, stage)
            assert model.stage == stage and model.config["stage"] == stage
            rebuilt = build_model(name, table=TABLE, **json.loads(json.dumps(model.config)))
            rebuilt.load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="stage"):
        build_model("tip", table=TABLE, stage="probe")
    with pytest.raises(RuntimeError, match="stage='finetune'"):
        tiny_model("tip", "pretrain").classify(*inputs(tiny_model("tip", "finetune"), make_batch(2), "input_names"))
    with pytest.raises(RuntimeError, match="stage='pretrain'"):
        tiny_model("mmcl", "finetune").pretrain_losses(*inputs(tiny_model("mmcl", "pretrain"), make_batch(2)))


def test_mmcl_paper_parameter_counts():
    for columns, pretraining in ((14, 51_213_376), (7, 51_209_792), (21, 51_216_960)):
        assert count(paper_model("mmcl", "pretrain", continuous_table(columns))) == pretraining
        assert count(paper_model("mmcl", "finetune", continuous_table(columns))) == 46_161_219


def test_tip_paper_parameter_counts():
    adni = continuous_table(14)
    finetune = paper_model("tip", "finetune", adni)
    assert count(finetune) == 76_627_779
    parts = {name: count(module) for name, module in finetune.named_children()}
    assert parts == {"image_encoder": 46_155_072, "tabular_encoder": 12_614_144, "fusion": 17_857_024, "classifier": 1_539}
    pretrain = paper_model("tip", "pretrain", adni)
    heads = {name: count(getattr(pretrain, name)) for name in ("image_head", "tabular_head", "itm_head")}
    assert heads == {"image_head": 4_458_624, "tabular_head": 328_320, "itm_head": 1_026}
    # reconstruction: Linear(512, 1) for continuous cells; no categorical predictor without categories
    assert count(pretrain) == 76_627_779 - 1_539 + sum(heads.values()) + 513
    with_categories = TableSpec(adni.column_names, (2, 3) + (0,) * 12)
    assert count(paper_model("tip", "finetune", with_categories)) == 76_627_779 + 512 * 5
    assert count(paper_model("tip", "pretrain", with_categories)) == count(pretrain) + 512 * 5 + (512 * 5 + 5)


def test_vita_paper_parameter_counts_follow_the_formula():
    d, c = 1025, 14
    block = (d * 3 * d + 3 * d) + (d * d + d) + 2 * 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    # per-column Linear(1, D), per-column [MASK] vector, CLS, 2 blocks, final LayerNorm
    tabular = c * 2 * d + c * d + d + 2 * block + 2 * d
    finetune = paper_model("vita", "finetune", continuous_table(c))
    assert count(finetune.tabular_encoder) == tabular == 25_287_775
    assert count(finetune) == 46_155_072 + tabular + (2048 + d) * 3 + 3 == 71_452_069
    pretrain = paper_model("vita", "pretrain", continuous_table(c))
    assert count(pretrain) == 46_155_072 + tabular + 4_458_624 + (d * d + d + d * 128 + 128) == 77_084_449


# --- losses against independent formulas ----------------------------------------------------------


def test_mmcl_loss_is_clip_on_the_pooled_image_and_the_corrupted_row():
    model = tiny_model("mmcl", "pretrain").eval()
    batch = make_batch(4)
    with torch.no_grad():
        out = model.pretrain_losses(batch["image"], batch["values"])
        image_z = model.image_head(model.image_encoder(batch["image"]).mean(dim=(2, 3, 4)))
        tabular_z = model.tabular_head(model.tabular_encoder(batch["values"]))
    assert out["loss"] is out["itc"] and out["itc_logits"].shape == (4, 4)
    torch.testing.assert_close(out["loss"], clip_by_hand(image_z, tabular_z, 0.1))
    # fine-tuned MMCL reads the image only (the paper's footnote)
    finetune = tiny_model("mmcl", "finetune").eval()
    other = make_batch(4, seed=1)
    assert finetune.input_names == ("image",)
    with torch.no_grad():
        assert not torch.allclose(finetune.classify(batch["image"]), finetune.classify(other["image"]))


def test_vita_loss_is_clip_on_mean_tokens():
    model = tiny_model("vita", "pretrain").eval()
    batch = make_batch(3)
    with torch.no_grad():
        out = model.pretrain_losses(batch["image"], batch["values"], batch["missing"])
        image_z = model.image_head(model.image_encoder(batch["image"]).mean(dim=(2, 3, 4)))
        tabular_z = model.tabular_head(model.tabular_encoder(batch["values"], batch["missing"]).mean(dim=1))
    torch.testing.assert_close(out["loss"], clip_by_hand(image_z, tabular_z, 0.1))


def test_masked_reconstruction_by_hand():
    is_categorical = torch.tensor([True, False, False])
    offsets = torch.tensor([0, 2, 2])  # one categorical column of 2 levels first
    logits = torch.zeros(2, 3, 2)
    logits[0, 0] = torch.tensor([0.0, math.log(3.0)])  # p(level 1) = 3/4
    predictions = torch.tensor([[9.0, 1.5, 2.0], [0.0, 0.0, 0.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.5, 5.0], [0.0, 4.0, 4.0]])
    scored = torch.tensor([[True, True, False], [False, False, False]])
    loss, parts = masked_reconstruction_loss(logits, predictions, targets, scored, is_categorical, offsets)
    assert loss.item() == pytest.approx((math.log(4 / 3) + (1.5 - 0.5) ** 2) / 2, rel=1e-6)
    assert parts["mtr_categorical"].item() == pytest.approx(math.log(4 / 3), rel=1e-6)
    loss.backward()
    # only the scored continuous cell has a gradient (the categorical cell is scored through the logits)
    assert predictions.grad.nonzero().tolist() == [[0, 1]]
    # no categorical cell scored: the mean over continuous cells alone
    only_continuous = torch.tensor([[False, True, True], [False, False, False]])
    loss, _ = masked_reconstruction_loss(logits, predictions, targets, only_continuous, is_categorical, offsets)
    assert loss.item() == pytest.approx(((1.5 - 0.5) ** 2 + (2.0 - 5.0) ** 2) / 2)


def test_tip_losses_itm_labels_and_masking():
    model = tiny_model("tip", "pretrain")
    batch = make_batch(4)
    out = model.pretrain_losses(*inputs(model, batch), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["loss"], (out["itc"] + out["itm"] + out["mtr"]) / 3)
    assert out["itm_labels"].tolist() == [1] * 4 + [0] * 8 and out["itm_logits"].shape == (12, 2)
    assert out["reconstruction_mask"].sum(dim=1).tolist() == [round(0.5 * 6)] * 4
    assert round(0.5 * 7) == 4 and round(0.5 * 21) == 10  # AIBL / NACC: Python's rounding, as TIP

    model.eval()  # same draws and no dropout: only the reconstruction target may change below
    def losses(batch):
        with torch.no_grad():
            return model.pretrain_losses(*inputs(model, batch), generator=torch.Generator().manual_seed(0))
    reference = losses(batch)
    row, column = (reference["reconstruction_mask"] & ~batch["original_missing"]).nonzero()[0].tolist()
    changed = {**batch, "original_values": batch["original_values"].clone()}
    changed["original_values"][row, column] += 1.0 if TABLE.cardinalities[column] == 0 else 0.0
    if TABLE.cardinalities[column]:
        changed["original_values"][row, column] = (changed["original_values"][row, column] + 1) % TABLE.cardinalities[column]
    moved = losses(changed)
    assert moved["mtr"] != reference["mtr"]  # a masked, observed cell is a scored target
    torch.testing.assert_close(moved["itc"], reference["itc"])
    torch.testing.assert_close(moved["itm"], reference["itm"])
    # the same cell flagged missing in the original row is never scored, whatever it holds
    gone = {**changed, "original_missing": changed["original_missing"].clone()}
    gone["original_missing"][row, column] = True
    gone_reference = {**batch, "original_missing": gone["original_missing"]}
    torch.testing.assert_close(losses(gone)["mtr"], losses(gone_reference)["mtr"])


def test_vita_tabular_vit_has_one_embedding_per_column_and_fixed_positions():
    model = tiny_model("vita", "pretrain")
    encoder = model.tabular_encoder
    kinds = [type(e).__name__ for e in encoder.column_embeddings]
    assert kinds == ["Linear", "Embedding", "Linear", "Embedding", "Linear", "Linear"]
    assert len({id(e) for e in encoder.column_embeddings}) == TABLE.num_columns
    assert "tabular_encoder.positions" not in model.state_dict()
    assert all(p is not encoder.positions for p in model.parameters())
    torch.testing.assert_close(encoder.positions[0], torch.zeros(16))  # the CLS has no position
    # sines then cosines at frequencies 10000^(-i/h), h = ceil(D/2); an odd D drops the last cosine
    codes = sincos_positions(3, 4)
    torch.testing.assert_close(codes[2], torch.tensor([math.sin(2), math.sin(0.02), math.cos(2), math.cos(0.02)]))
    odd = sincos_positions(2, 5)
    torch.testing.assert_close(odd[1], torch.tensor([math.sin(1), math.sin(10000 ** (-1 / 3)),
                                                     math.sin(10000 ** (-2 / 3)), math.cos(1),
                                                     math.cos(10000 ** (-1 / 3))]))


# --- loading pretrained encoders --------------------------------------------------------------------


def test_load_pretrained_encoders_and_mismatches():
    for name, encoders in (("mmcl", ("image_encoder.",)), ("tip", ("image_encoder.", "tabular_encoder.", "fusion.")),
                           ("vita", ("image_encoder.", "tabular_encoder."))):
        pretrained, finetune = tiny_model(name, "pretrain", seed=1), tiny_model(name, "finetune", seed=2)
        report = finetune.load_pretrained_encoders(pretrained.state_dict())
        assert report.missing == ["classifier.bias", "classifier.weight"], name
        assert all(not key.startswith(encoders) for key in report.unexpected)
        for key, value in pretrained.state_dict().items():
            if key.startswith(encoders):
                assert torch.equal(finetune.state_dict()[key], value), key
        finetune.freeze_encoders()
        assert all(not p.requires_grad for p in finetune.encoder_parameters())
        assert [p.requires_grad for p in finetune.head_parameters()] == [True, True]
    mmcl_report = tiny_model("mmcl", "finetune").load_pretrained_encoders(tiny_model("mmcl", "pretrain").state_dict())
    assert "tabular_encoder.0.weight" in mmcl_report.unexpected  # pretrained, then left behind
    tip = tiny_model("tip", "finetune")
    with pytest.raises(RuntimeError, match="missing encoder weight fusion"):
        tip.load_pretrained_encoders(tiny_model("mmcl", "pretrain").state_dict())
    with pytest.raises(RuntimeError, match="unknown key"):
        tip.load_pretrained_encoders({**tiny_model("tip", "pretrain").state_dict(), "decoder.weight": torch.zeros(1)})
    other_cohort = TableSpec(("a", "b", "c"), (0, 0, 0))
    with pytest.raises(RuntimeError, match="shape mismatch tabular_encoder.embedding.column_embedding"):
        tip.load_pretrained_encoders(tiny_model("tip", "pretrain", table=other_cohort).state_dict())


# --- tiny pretraining -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SSL)
def test_tiny_pretraining_lowers_the_loss(name):
    model = tiny_model(name, "pretrain")
    batch = make_batch(6, seed=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    losses = []
    for _ in range(12):
        loss = model.pretrain_losses(*inputs(model, batch))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.8 * losses[0], f"{name}: {losses}"


# --- the training stage, per cohort ----------------------------------------------------------------


def stage_config(variant: str, epochs: int = 2) -> dict:
    """The paper config's entries for ``variant``, scaled down, over the tiny config (schema defaults filled)."""
    from snakemake.utils import validate

    pretrain_own = {**PAPER["pretrain"]["variant_settings"][variant], "epochs": epochs, "batch_size": 4,
                    "warmup_epochs": 0, "lr": 1e-3, "checkpoint_every": 1, "val_every": 1}
    finetune_own = {**PAPER["finetune"]["variant_settings"][variant], "epochs": 2, "batch_size": 4}
    config = {
        "model": {**TINY, **(TINY_VITA if variant == "vita" else {})}, "headers": {"encoder": ENCODER},
        "pretrain": {**_tiny["pretrain"], "image_shape": list(TINY_IMAGE), "variant_settings": {variant: pretrain_own}},
        "finetune": {**_tiny["finetune"], "seeds": [1], "variant_settings": {variant: finetune_own}},
        "evaluate": {}, "report": {"variants": [variant]},
    }
    for section in ("pretrain", "finetune", "evaluate", "report"):
        validate(config[section], str(REPO / "workflow" / "schemas" / f"{section}.schema.yaml"), set_default=True)
    return config


def settings_file(settings: settings_stage.PretrainSettings, cohort: str) -> Path:
    """The settings file rule pretrain_cohort_settings would write (in the test's working folder)."""
    path = Path("settings") / f"{cohort}.json"
    settings.write(path)
    return path.resolve()


def cli_pretrain(config: dict, variant: str, cohort: str) -> list[str]:
    """The arguments rule pretrain_cohort gives ``python -m workflow.train`` (without torchrun)."""
    return ["pretrain", "--variant", variant, "--cohorts", cohort, "--tables", paths.TABLE.format(cohort=cohort),
            "--columns", paths.TABLE_COLUMNS.format(cohort=cohort),
            "--header-bank", paths.HEADER_BANK.format(encoder=ENCODER), "--encoder", ENCODER,
            "--settings", str(settings_file(train.cohort_pretrain_settings(config, variant, cohort), cohort)),
            "--weights", paths.COHORT_PRETRAINED_WEIGHTS.format(variant=variant, cohort=cohort),
            "--metrics", train.COHORT_PRETRAIN_METRICS.format(variant=variant, cohort=cohort), "--threads", "1"]


@pytest.fixture
def inputs_dir(tmp_path: Path, monkeypatch) -> Path:
    write_training_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)  # the tables name volumes relative to the working directory
    return tmp_path


@pytest.mark.parametrize("variant", SSL)
def test_pretrain_finetune_evaluate_in_process(inputs_dir: Path, variant: str) -> None:
    config = stage_config(variant)
    cohort = "ADNI"
    assert train.resolve_variant(variant, config) == (variant, True)
    weights = paths.COHORT_PRETRAINED_WEIGHTS.format(variant=variant, cohort=cohort)
    assert train.pretrained_input(variant, config, cohort) == [weights]
    assert train.main(cli_pretrain(config, variant, cohort)) == 0
    metrics = pd.read_csv(train.COHORT_PRETRAIN_METRICS.format(variant=variant, cohort=cohort))
    assert len(metrics) == 2 and {"train_loss", "train_itc", "val_loss"} <= set(metrics.columns)
    if variant == "tip":
        assert {"train_itm", "train_mtr", "train_itm_accuracy"} <= set(metrics.columns)
    common = dict(variant=variant, cohort=cohort, seed=1, table=paths.TABLE.format(cohort=cohort),
                  columns=paths.TABLE_COLUMNS.format(cohort=cohort), header_bank=paths.HEADER_BANK.format(encoder=ENCODER),
                  encoder=ENCODER, gpus=0, threads=1)
    settings = train.finetune_settings(config, variant, cohort)
    best = inputs_dir / "ft" / "best.safetensors"
    result = train.run_finetune(settings=settings, pretrained=weights, best=str(best), metrics=str(best.parent / "m.csv"),
                                **common)
    assert result["selection"] == "auc" and 1 <= result["best_epoch"] <= 2
    evaluation = train.run_evaluate(settings=train.evaluate_settings(config, variant), weights=str(best),
                                    metrics_json=str(inputs_dir / "eval.json"), predictions=str(inputs_dir / "p.tsv"),
                                    **common)
    assert evaluation["n"] == 6 and evaluation["selection"] == "auc"
    # another cohort's weights are refused, even where they would fit by shape (MMCL's image encoder)
    with pytest.raises(CheckpointError, match="pretrained on"):
        train.run_finetune(settings=train.finetune_settings(config, variant, "NACC"), pretrained=weights,
                           best=str(inputs_dir / "nacc" / "best.safetensors"), metrics=str(inputs_dir / "nacc" / "m.csv"),
                           **{**common, "cohort": "NACC", "table": paths.TABLE.format(cohort="NACC"),
                              "columns": paths.TABLE_COLUMNS.format(cohort="NACC")})


def test_killed_cohort_pretraining_resumes_to_the_uninterrupted_weights(tmp_path: Path, monkeypatch) -> None:
    variant, cohort, epochs = "tip", "AIBL", 3
    config = stage_config(variant, epochs)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for workdir in (straight, killed):
        workdir.mkdir()
        write_training_inputs(workdir)
    monkeypatch.chdir(straight)
    assert train.main(cli_pretrain(config, variant, cohort)) == 0
    monkeypatch.chdir(tmp_path)

    run_dir = killed / paths.COHORT_PRETRAIN_DIR.format(variant=variant, cohort=cohort)
    command = [sys.executable, "-m", "workflow.train", *cli_pretrain(config, variant, cohort)]
    environment = {**os.environ, **VENV_ON_PATH, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
    deadline = time.time() + 120
    while not (run_dir / "checkpoints" / "resume.json").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = json.loads((run_dir / "checkpoints" / "resume.json").read_text())["epoch"]
    assert interrupted_at < epochs, "the run finished before it could be killed"

    rerun = subprocess.run(command, cwd=killed, capture_output=True, text=True, env=environment)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming pretraining after epoch {interrupted_at}" in rerun.stderr
    weights = paths.COHORT_PRETRAINED_WEIGHTS.format(variant=variant, cohort=cohort)
    expected, resumed = load_file(straight / weights), load_file(killed / weights)
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)
    metrics = train.COHORT_PRETRAIN_METRICS.format(variant=variant, cohort=cohort)
    without_seconds = lambda path: pd.read_csv(path).drop(columns="seconds")  # noqa: E731
    pd.testing.assert_frame_equal(without_seconds(straight / metrics), without_seconds(killed / metrics))


def test_cohort_pretraining_settings_rerun_only_what_they_change():
    config = stage_config("mmcl")
    before = {c: train.cohort_pretrain_settings(config, "mmcl", c) for c in ("ADNI", "AIBL", "NACC")}
    citab = train.pretrain_settings(config)
    assert before["ADNI"].corruption_rate == 0.3 and before["NACC"].corruption_rate == 0.0
    config["pretrain"]["variant_settings"]["mmcl"]["corruption_rate"] = {"default": 0.3, "NACC": 0.0, "ADNI": 0.5}
    after = {c: train.cohort_pretrain_settings(config, "mmcl", c) for c in ("ADNI", "AIBL", "NACC")}
    # the rule's params (what Snakemake compares) change for ADNI's job only
    assert [c for c in before if repr(before[c].as_params()) != repr(after[c].as_params())] == ["ADNI"]
    assert train.pretrain_settings(config) == citab  # CITab's pretraining ignores the baselines' entries
    # switching pretraining off fine-tunes from scratch: no pretrained input
    config["finetune"]["pretrained"] = False
    assert train.pretrained_input("mmcl", config, "ADNI") == []


def test_the_rules_pretrain_tip_on_one_cohort_then_fine_tune_and_evaluate_it(tmp_path: Path) -> None:
    """The real rules on the small training inputs: pretrain_cohort -> finetune -> evaluate for one
    cohort, the fine-tuning job reading that cohort's pretrained weights."""
    from conftest import run_snakemake

    write_training_inputs(tmp_path)
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(yaml.safe_dump({
        "pretrain": {"image_shape": [16, 16, 16], "variant_settings": {"tip": {"epochs": 2, "warmup_epochs": 0}}},
        "finetune": {"seeds": [1], "variant_settings": {"tip": {"epochs": 2}}},
    }))
    target = paths.EVAL_METRICS.format(variant="tip", cohort="AIBL", seed=1)
    process = run_snakemake(tmp_path, target, "--cores", "2", configfiles=(TINY_CONFIG, overrides), env=VENV_ON_PATH)
    assert "rule pretrain_cohort:" in process.stdout and "rule pretrain:" not in process.stdout
    weights = tmp_path / paths.COHORT_PRETRAINED_WEIGHTS.format(variant="tip", cohort="AIBL")
    assert weights.is_file() and not (tmp_path / paths.COHORT_PRETRAINED_WEIGHTS.format(variant="tip", cohort="ADNI")).exists()
    log = (tmp_path / "results" / "logs" / "finetune" / "tip" / "AIBL" / "seed-1.log").read_text()
    assert "AIBL" in log and str(paths.COHORT_PRETRAINED_WEIGHTS.format(variant="tip", cohort="AIBL")) in log
    evaluation = json.loads((tmp_path / target).read_text())
    assert evaluation["variant"] == "tip" and evaluation["selection"] == "auc" and evaluation["n"] == 6
