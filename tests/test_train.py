"""Training stage: DDP pretraining through the real rules, rerun scope, resume after a kill, faults.

Inputs are written directly (tests/test_train_helpers.py) so these tests do not wait for the
upstream stages; the model is the real CITab at the tiny config's sizes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, TINY_CONFIG, classification_case, markdown_lines, run_snakemake
from safetensors import safe_open
from safetensors.torch import load_file
from test_train_helpers import ENCODER, write_training_inputs

from model.data import DataError, ImageTableDataset, SampleSettings, corrupt_row
from workflow.training_rows import load_cohort_rows
from model.metrics import classification_metrics
from model.checkpoints import CheckpointError
from model.distributed import DeviceError, resolve_device
from model.training import learning_rate
from workflow import paths, train
from workflow import settings as settings_stage

VENV_PATH = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
TINY = yaml.safe_load(TINY_CONFIG.read_text())
COHORTS = ["ADNI", "AIBL"]  # for the direct command-line runs (the rules use the tiny config's three)
# Small enough for seconds per job, with 2 gloo processes for pretraining.
TEST_OVERRIDES = {
    "pretrain": {"epochs": 2, "batch_size": 4, "image_shape": [16, 16, 16], "cpu_processes": 2, "threads": 2},
    "finetune": {"epochs": 2, "batch_size": 4, "seeds": [1]},
}


def write_config(path: Path, overrides: dict) -> Path:
    """A config file laid over the tiny config (run_snakemake passes both)."""
    path.write_text(yaml.safe_dump(overrides))
    return path


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a Snakemake dry run."""
    table = dry_run_output.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A working directory where the real rules ran pretrain -> finetune -> evaluate -> Table 1."""
    workdir = tmp_path_factory.mktemp("train")
    write_training_inputs(workdir)
    overrides = write_config(workdir / "overrides.yaml", TEST_OVERRIDES)
    run_snakemake(workdir, paths.TABLE1.format(ext="md"), "--cores", "2",
                  configfiles=(TINY_CONFIG, overrides), env=VENV_PATH)
    return workdir


def test_ddp_pretraining_two_gloo_processes_agree(trained: Path) -> None:
    weights = trained / paths.PRETRAINED_WEIGHTS.format(variant="citab")
    with safe_open(str(weights), framework="pt") as handle:
        summary = json.loads(handle.metadata()["summary"])
    assert summary["world_size"] == 2
    assert summary["ranks_agree"] and len(set(summary["parameter_checksums"])) == 1
    metrics = (trained / paths.PRETRAIN_DIR.format(variant="citab") / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 1 + TEST_OVERRIDES["pretrain"]["epochs"]
    # The resume point is gone after a finished run; the epoch snapshots stay.
    checkpoints = trained / paths.PRETRAIN_DIR.format(variant="citab") / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch-0001.safetensors", "epoch-0002.safetensors"]
    table = (trained / paths.TABLE1.format(ext="md")).read_text()
    assert [line.split(" |")[0] for line in markdown_lines(table)[2:5]] == ["| DAFT", "| CITab", "| Majority class"]
    evaluation = json.loads((trained / paths.EVAL_METRICS.format(variant="citab", cohort="ADNI", seed=1)).read_text())
    assert evaluation["n"] == 6 and len(evaluation["confusion_matrix"]) == 3


def test_finetune_setting_change_reruns_only_finetune_evaluate_table(trained: Path, tmp_path: Path) -> None:
    changed = write_config(tmp_path / "lr.yaml", {**TEST_OVERRIDES, "finetune": {**TEST_OVERRIDES["finetune"], "lr": 5e-4}})
    dry = run_snakemake(trained, paths.TABLE1.format(ext="md"), "-n", configfiles=(TINY_CONFIG, changed), env=VENV_PATH)
    runs = 3 * len(TINY["report"]["variants"])  # DAFT takes the shared learning rate too
    # each job's settings file is rewritten (local rule), then the job reruns
    assert job_counts(dry.stdout) == {"finetune_settings": runs, "finetune": runs, "evaluate": runs, "results_table": 1}
    # A per-cohort setting reruns that cohort only (DAFT has corruption rates of its own).
    adni = write_config(tmp_path / "adni.yaml", {**TEST_OVERRIDES, "finetune": {
        **TEST_OVERRIDES["finetune"], "corruption_rate": {"default": 0.0, "ADNI": 0.5, "AIBL": 0.3, "NACC": 0.0}}})
    dry = run_snakemake(trained, paths.TABLE1.format(ext="md"), "-n", configfiles=(TINY_CONFIG, adni), env=VENV_PATH)
    assert job_counts(dry.stdout) == {"finetune_settings": 1, "finetune": 1, "evaluate": 1, "results_table": 1}
    # The "w/o multi-modal SSL" row is a config switch: fine-tuning from scratch, no pretraining.
    scratch = write_config(tmp_path / "scratch.yaml", {
        **TEST_OVERRIDES, "finetune": {**TEST_OVERRIDES["finetune"], "scratch_variants": {"citab_no_ssl": "citab"}},
        "report": {"variants": ["citab", "citab_no_ssl"]}})
    dry = run_snakemake(trained, paths.TABLE1.format(ext="md"), "-n", "-p", configfiles=(TINY_CONFIG, scratch), env=VENV_PATH)
    assert job_counts(dry.stdout) == {"finetune_settings": 3, "evaluate_settings": 3, "finetune": 3, "evaluate": 3,
                                      "results_table": 1}
    no_ssl_commands = [line for line in dry.stdout.splitlines() if "workflow.train finetune --variant citab_no_ssl" in line]
    assert len(no_ssl_commands) == 3 and all("--pretrained" not in line for line in no_ssl_commands)


def _cli(workdir: Path, job: str, settings, *extra: str) -> list[str]:
    """The job's command line, its settings file written as the rule's settings rule writes it."""
    settings_file = workdir / "settings" / f"{job}.json"
    settings.write(settings_file)
    common = ["--variant", "citab", "--header-bank", paths.HEADER_BANK.format(encoder=ENCODER), "--encoder", ENCODER,
              "--settings", str(settings_file), "--threads", "1"]
    return [sys.executable, "-m", "workflow.train", job, *common, *extra]


def _pretrain_command(workdir: Path, epochs: int) -> list[str]:
    config = {"model": TINY["model"], "headers": {"encoder": ENCODER},
              "pretrain": {**TINY["pretrain"], **TEST_OVERRIDES["pretrain"], "epochs": epochs, "checkpoint_every": 1}}
    _fill_defaults(config)
    cohorts = COHORTS
    return _cli(workdir, "pretrain", train.pretrain_settings(config),
                "--cohorts", *cohorts, "--tables", *(paths.TABLE.format(cohort=c) for c in cohorts),
                "--columns", *(paths.TABLE_COLUMNS.format(cohort=c) for c in cohorts),
                "--weights", paths.PRETRAINED_WEIGHTS.format(variant="citab"),
                "--metrics", paths.PRETRAIN_DIR.format(variant="citab") + "/metrics.csv")


def _fill_defaults(config: dict) -> None:
    from snakemake.utils import validate

    for section in ("pretrain", "finetune", "evaluate", "report"):
        config.setdefault(section, {})
        validate(config[section], str(REPO / "workflow" / "schemas" / f"{section}.schema.yaml"), set_default=True)


def test_pretraining_killed_then_rerun_ends_with_the_uninterrupted_weights(tmp_path: Path, monkeypatch) -> None:
    epochs = 3
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for workdir in (straight, killed):
        workdir.mkdir()
        write_training_inputs(workdir)
    monkeypatch.chdir(straight)  # the uninterrupted run in this process (same code path, no torchrun)
    assert train.main(_pretrain_command(straight, epochs)[3:]) == 0
    monkeypatch.chdir(tmp_path)

    resume_state = killed / paths.PRETRAIN_DIR.format(variant="citab") / "checkpoints" / "resume.json"
    process = subprocess.Popen(_pretrain_command(killed, epochs), cwd=killed, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, **VENV_PATH})
    deadline = time.time() + 120
    while not resume_state.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = json.loads(resume_state.read_text())["epoch"]
    assert interrupted_at < epochs, "the run finished before it could be killed"
    assert not (killed / paths.PRETRAINED_WEIGHTS.format(variant="citab")).exists()

    rerun = subprocess.run(_pretrain_command(killed, epochs), cwd=killed, capture_output=True, text=True,
                           env={**os.environ, **VENV_PATH})
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming pretraining after epoch {interrupted_at}" in rerun.stderr
    expected = load_file(straight / paths.PRETRAINED_WEIGHTS.format(variant="citab"))
    resumed = load_file(killed / paths.PRETRAINED_WEIGHTS.format(variant="citab"))
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, resumed[name]), name
    straight_metrics = (straight / paths.PRETRAIN_DIR.format(variant="citab") / "metrics.csv").read_text()
    resumed_metrics = (killed / paths.PRETRAIN_DIR.format(variant="citab") / "metrics.csv").read_text()
    drop_seconds = lambda text: [line.rsplit(",", 1)[0] for line in text.splitlines()]  # noqa: E731
    assert drop_seconds(straight_metrics) == drop_seconds(resumed_metrics)


def _finetune_settings() -> settings_stage.FinetuneSettings:
    config = {"model": TINY["model"], "headers": {"encoder": ENCODER},
              "pretrain": {**TINY["pretrain"], **TEST_OVERRIDES["pretrain"]},
              "finetune": {**TINY["finetune"], **TEST_OVERRIDES["finetune"], "epochs": 3}}
    _fill_defaults(config)
    return train.finetune_settings(config, "citab", "ADNI")


def _run_finetune(workdir: Path, settings: settings_stage.FinetuneSettings, pretrained: str | None = None) -> dict:
    return train.run_finetune(
        variant="citab", cohort="ADNI", seed=1, table=str(workdir / paths.TABLE.format(cohort="ADNI")),
        columns=str(workdir / paths.TABLE_COLUMNS.format(cohort="ADNI")),
        header_bank=str(workdir / paths.HEADER_BANK.format(encoder=ENCODER)), encoder=ENCODER, settings=settings,
        pretrained=pretrained, best=str(workdir / "ft" / "best.safetensors"), metrics=str(workdir / "ft" / "metrics.csv"),
        gpus=0, threads=1,
    )


def test_finetuning_crashed_then_rerun_ends_with_the_uninterrupted_weights(tmp_path: Path, monkeypatch) -> None:
    import model.training as training

    settings = _finetune_settings()
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    for workdir in (straight, crashed):
        workdir.mkdir()
        write_training_inputs(workdir)
        monkeypatch.chdir(workdir)  # the tables name volumes relative to the working directory
        if workdir == straight:
            _run_finetune(workdir, settings)
    calls = {"n": 0}
    original = training.write_metrics_csv

    def crash_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill during epoch 2")
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "write_metrics_csv", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        _run_finetune(crashed, settings)
    monkeypatch.setattr(training, "write_metrics_csv", original)
    assert json.loads((crashed / "ft" / "checkpoints" / "resume.json").read_text())["epoch"] == 1
    result = _run_finetune(crashed, settings)
    expected, resumed = load_file(straight / "ft" / "best.safetensors"), load_file(crashed / "ft" / "best.safetensors")
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)
    assert result["best_epoch"] >= 1 and not (crashed / "ft" / "checkpoints").exists()


# --- faults ---------------------------------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path: Path, monkeypatch) -> Path:
    write_training_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_missing_or_corrupt_checkpoint_is_named(inputs: Path) -> None:
    settings = _finetune_settings()
    with pytest.raises(CheckpointError, match=r"pretrained weights 'nowhere/model.safetensors' does not exist"):
        _run_finetune(inputs, settings, pretrained="nowhere/model.safetensors")
    corrupt = inputs / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01 this is not a safetensors file")
    with pytest.raises(CheckpointError, match=r"corrupt.safetensors' is not a readable safetensors file"):
        _run_finetune(inputs, settings, pretrained=str(corrupt))


def test_header_bank_of_another_encoder_is_refused(inputs: Path) -> None:
    bank = inputs / paths.HEADER_BANK.format(encoder=ENCODER)
    with pytest.raises(ValueError, match=r"built with encoder 'minilm', but the config asks for 'bert-base-uncased'"):
        train.load_checked_header_bank(bank, "bert-base-uncased")


def test_table_and_volumes_disagreeing_on_subjects_is_named(inputs: Path) -> None:
    missing = Path(paths.MODEL_READY_VOLUME.format(cohort="AIBL", subject="S002", session="M000"))
    missing.unlink()
    bank = train.load_checked_header_bank(paths.HEADER_BANK.format(encoder=ENCODER), ENCODER)
    with pytest.raises(DataError, match=r"cohort AIBL name a model-ready volume that does not exist .*S002/M000"):
        train.load_rows("AIBL", paths.TABLE.format(cohort="AIBL"), paths.TABLE_COLUMNS.format(cohort="AIBL"), bank, "train")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without GPUs")
def test_gpu_request_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(DeviceError, match=r"pretrain.gpus asks for 2 GPU\(s\), but torch sees no GPU.*pretrain.gpus: 0"):
        resolve_device(2, "pretrain.gpus")


# --- pieces ---------------------------------------------------------------------------------------


def test_learning_rate_follows_the_official_per_epoch_schedule() -> None:
    assert learning_rate(0, 1e-4, 10, 300) == 0.0
    assert learning_rate(9, 1e-4, 10, 300) == pytest.approx(1e-4)
    assert learning_rate(10, 1e-4, 10, 300) == pytest.approx(1e-4)
    assert learning_rate(155, 1e-4, 10, 300) == pytest.approx(0.5e-4)
    assert learning_rate(7, 1e-4, None, 20) == 1e-4


def test_mixed_cohort_items_are_padded_with_a_mask(inputs: Path) -> None:
    bank = train.load_checked_header_bank(paths.HEADER_BANK.format(encoder=ENCODER), ENCODER)
    rows = [train.load_rows(c, paths.TABLE.format(cohort=c), paths.TABLE_COLUMNS.format(cohort=c), bank, "train")
            for c in ("ADNI", "AIBL")]
    dataset = ImageTableDataset(rows, SampleSettings(image_shape=(16, 16, 16)))
    aibl_item = dataset[len(rows[0])]
    assert float(aibl_item["image"].min()) == 0.0 and float(aibl_item["image"].max()) == pytest.approx(1.0)
    resized = ImageTableDataset(rows, SampleSettings(image_shape=(12, 10, 12)))
    assert resized[0]["image"].shape == (1, 12, 10, 12)
    assert aibl_item["pad_mask"].tolist() == [False, False, False, True, True]
    assert aibl_item["values"][3:].tolist() == [0.0, 0.0]
    assert aibl_item["col_ids"][:3].tolist() == bank.column_ids(["Age", "Sex", "MMSE"])


def test_augmented_draws_repeat_for_the_same_seed_epoch_and_row(inputs: Path) -> None:
    bank = train.load_checked_header_bank(paths.HEADER_BANK.format(encoder=ENCODER), ENCODER)
    rows = [load_cohort_rows("ADNI", paths.TABLE.format(cohort="ADNI"), paths.TABLE_COLUMNS.format(cohort="ADNI"),
                             {t: i for i, t in enumerate(bank.headers)}, "train")]
    settings = SampleSettings(image_shape=(16, 16, 16), augment_probability=1.0, corruption_rate=0.4, seed=3)
    first = ImageTableDataset(rows, settings, corruption_pools=[(rows[0].values, rows[0].missing)])
    second = ImageTableDataset(rows, settings, corruption_pools=[(rows[0].values, rows[0].missing)])
    assert torch.equal(first[2]["image"], second[2]["image"])
    first.set_epoch(1)
    assert not torch.equal(first[2]["image"], second[2]["image"])
    corrupted = corrupt_row(np.zeros(5, dtype=np.float32), np.ones((4, 5), dtype=np.float32), 0.4, np.random.default_rng(0))
    assert int(corrupted.sum()) == 2  # floor(0.4 * 5) cells replaced


def test_metrics_survive_a_test_set_without_a_class() -> None:
    labels = np.array([0, 0, 2, 2])
    probabilities = np.array([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]])
    metrics = classification_metrics(labels, probabilities)
    assert metrics["auc_classes"] == [0, 2] and not metrics["auc_complete"]
    assert metrics["accuracy"] == 0.5 and metrics["support"] == [2, 0, 2]
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 0, 0], [1, 0, 1]]
    single = classification_metrics(np.array([1, 1]), probabilities[:2])
    assert np.isnan(single["auc"]) and single["auc_classes"] == []


@pytest.mark.parametrize("case", ["all classes", "ties", "a class missing", "a class never predicted", "tiny"])
def test_metrics_equal_scikit_learns(case: str) -> None:
    """model.metrics is numpy only (scikit-learn's import costs each job about a CPU-second); every
    value must still be scikit-learn's, zero-division and absent-class conventions included."""
    from sklearn import metrics as sk

    labels, probabilities = classification_case(case, seed=7)
    predictions = probabilities.argmax(axis=1)
    ours = classification_metrics(labels, probabilities)
    scored = ours["auc_classes"]
    expected = {
        "accuracy": sk.accuracy_score(labels, predictions),
        "f1": sk.f1_score(labels, predictions, average="macro", zero_division=0),
        "balanced_accuracy": sk.balanced_accuracy_score(labels, predictions),
        "precision_macro": sk.precision_score(labels, predictions, average="macro", zero_division=0),
        "recall_macro": sk.recall_score(labels, predictions, average="macro", zero_division=0),
        "precision": sk.precision_score(labels, predictions, labels=[0, 1, 2], average=None, zero_division=0).tolist(),
        "recall": sk.recall_score(labels, predictions, labels=[0, 1, 2], average=None, zero_division=0).tolist(),
        "confusion_matrix": sk.confusion_matrix(labels, predictions, labels=[0, 1, 2]).tolist(),
        "auc": np.mean([sk.roc_auc_score(labels == k, probabilities[:, k]) for k in scored]) if scored else np.nan,
    }
    assert scored == [k for k in range(3) if 0 < np.sum(labels == k) < len(labels)]
    for key, value in expected.items():
        np.testing.assert_allclose(ours[key], value, rtol=0, atol=1e-12, err_msg=f"{case}: {key}")
    if case == "all classes":
        assert ours["auc"] == pytest.approx(sk.roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"))


# --- supervised baselines -------------------------------------------------------------------------

BASELINES = ["resnet50", "transformer", "concat", "daft", "cross_attention", "hyperfusion"]


@pytest.mark.parametrize("variant", BASELINES)
def test_baseline_trains_from_scratch_and_evaluates_with_its_own_settings(inputs: Path, variant: str) -> None:
    """Each baseline goes through the same fine-tuning and evaluation jobs as CITab, from scratch,
    with the config.yaml harness settings (scaled down) and its selection rule recorded."""
    paper = yaml.safe_load((REPO / "config.yaml").read_text())
    own = {**paper["finetune"]["variant_settings"][variant], "epochs": 2, "batch_size": 4}
    if "tabular_prior" in own:
        own["tabular_prior"] = {**own["tabular_prior"], "epochs": 3}
    config = {"model": TINY["model"], "headers": {"encoder": ENCODER},
              "pretrain": {**TINY["pretrain"], **TEST_OVERRIDES["pretrain"]},
              "finetune": {**TINY["finetune"], **TEST_OVERRIDES["finetune"], "variant_settings": {variant: own}},
              "evaluate": {}}
    _fill_defaults(config)
    assert train.resolve_variant(variant, config) == (variant, False)
    assert train.pretrained_input(variant, config) == []
    settings = train.finetune_settings(config, variant, "ADNI")
    assert settings.selection == own["selection"] and settings.epochs == 2
    common = dict(variant=variant, cohort="ADNI", seed=1, table=paths.TABLE.format(cohort="ADNI"),
                  columns=paths.TABLE_COLUMNS.format(cohort="ADNI"), header_bank=paths.HEADER_BANK.format(encoder=ENCODER),
                  encoder=ENCODER, gpus=0, threads=1)
    best = inputs / "ft" / variant / "best.safetensors"
    result = train.run_finetune(settings=settings, pretrained=None, best=str(best), metrics=str(best.parent / "metrics.csv"),
                                **common)
    assert result["selection"] == own["selection"] and 1 <= result["best_epoch"] <= 2
    evaluation = train.run_evaluate(settings=train.evaluate_settings(config, variant), weights=str(best),
                                    metrics_json=str(inputs / "eval.json"), predictions=str(inputs / "pred.tsv"), **common)
    assert evaluation["selection"] == own["selection"] and evaluation["n"] == 6
    predictions = pd.read_csv(inputs / "pred.tsv", sep="\t")
    assert np.allclose(predictions[["prob_CN", "prob_MCI", "prob_DE"]].sum(axis=1), 1.0, atol=1e-5)


def test_cpu_processes_run_deterministic_without_loading_the_compiler() -> None:
    """setup_processes turns on torch's deterministic algorithms on CPU without importing TorchInductor
    (whose import, through the public switch, costs every training job about a CPU-second)."""
    script = ("import sys, torch; from model.distributed import setup_processes; setup_processes(0, 'test', 1); "
              "print(torch.are_deterministic_algorithms_enabled(), 'torch._inductor' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "False"], result.stdout + result.stderr
