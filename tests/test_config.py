"""The workflow as a user first meets it: config validation, the demo's planned jobs, lint."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import REPO, run_snakemake


def write_overlay(tmp_path: Path, settings: dict) -> Path:
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def test_demo_dry_run_plans_every_stage(snakemake_workdir: Path) -> None:
    process = run_snakemake(snakemake_workdir, "-n", configfiles=(REPO / "config" / "demo.yaml",))
    for rule in ("synthesize_cohort", "intake_cohort", "preprocess_accepted", "build_table", "embed_headers",
                 "pretrain", "finetune", "evaluate", "results_table"):
        assert rule in process.stdout, f"{rule} missing from the demo's planned jobs"
    assert "This was a dry-run" in process.stdout


def test_lint_reports_nothing(snakemake_workdir: Path) -> None:
    process = run_snakemake(snakemake_workdir, "--lint", configfiles=(REPO / "config" / "demo.yaml",), check=False)
    assert process.returncode == 0, process.stdout[-4000:]
    assert "Congratulations" in process.stdout


def test_missing_real_data_path_stops_with_a_hint(snakemake_workdir: Path) -> None:
    # config.yaml alone: real cohorts under data/, which this empty working directory lacks.
    process = run_snakemake(snakemake_workdir, "-n", configfiles=(), check=False)
    assert process.returncode != 0
    assert "cohort ADNI: data folder 'data/ADNI' (config cohorts.ADNI.root) does not exist" in process.stdout
    assert "snakemake --configfile config/demo.yaml" in process.stdout


def test_wrong_type_names_the_key(snakemake_workdir: Path, tmp_path: Path) -> None:
    overlay = write_overlay(tmp_path, {"synthetic": {"subjects": "many"}})
    process = run_snakemake(snakemake_workdir, "-n", configfiles=(REPO / "config" / "demo.yaml", overlay), check=False)
    assert process.returncode != 0
    assert "Invalid configuration in config.synthetic" in process.stdout
    assert "'many'" in process.stdout


def test_unknown_cohort_format_and_key_are_rejected(snakemake_workdir: Path, tmp_path: Path) -> None:
    overlay = write_overlay(tmp_path, {"cohorts": {"OASIS": {"source": "synthetic", "format": "oasis"}}})
    process = run_snakemake(snakemake_workdir, "-n", configfiles=(REPO / "config" / "demo.yaml", overlay), check=False)
    assert process.returncode != 0
    assert "Invalid configuration in config" in process.stdout and "'oasis' is not one of" in process.stdout

    typo = write_overlay(tmp_path, {"pretrian": {"epochs": 3}})
    process = run_snakemake(snakemake_workdir, "-n", configfiles=(REPO / "config" / "demo.yaml", typo), check=False)
    assert process.returncode != 0 and "pretrian" in process.stdout


def test_raw_cohort_needs_its_download_folders_and_plans_the_convert_stage(snakemake_workdir: Path,
                                                                           tmp_path: Path) -> None:
    root = tmp_path / "NACC"
    (root / "clinical").mkdir(parents=True)
    overlay = write_overlay(tmp_path, {"cohorts": {"NACC": {"source": "raw", "root": str(root)}}})
    demo = REPO / "config" / "demo.yaml"
    process = run_snakemake(snakemake_workdir, "-n", configfiles=(demo, overlay), check=False)
    assert process.returncode != 0
    assert (f"cohort NACC (source: raw, format: nacc): no folder 'mri' under '{root}' "
            "(NACC's MRI session zips (DICOM), named by NACCMRFI)") in process.stdout

    (root / "mri").mkdir()
    process = run_snakemake(snakemake_workdir, "-n", configfiles=(demo, overlay))
    assert "convert_nacc" in process.stdout and "convert_clinica" not in process.stdout


def test_demo_raw_overlay_plans_the_raw_download_and_its_conversion(snakemake_workdir: Path) -> None:
    process = run_snakemake(snakemake_workdir, "-n", configfiles=(REPO / "config" / "demo.yaml",
                                                                  REPO / "config" / "demo-raw.yaml"))
    for rule, count in (("synthesize_raw_download", 3), ("convert_clinica", 2), ("convert_nacc", 1)):
        assert any(line.split() == [rule, str(count)] for line in process.stdout.splitlines()), rule


def test_the_paper_config_plans_every_table1_row_for_every_cohort(snakemake_workdir: Path) -> None:
    """config.yaml alone, on empty download folders: CITab is pretrained once across the three
    cohorts, each self-supervised baseline once per cohort; each Table 1 row is trained and
    evaluated per cohort, the supervised baselines from scratch, the self-supervised ones from their
    own cohort's pretrained weights, each with its own harness settings."""
    for cohort, folders in (("ADNI", ("images", "clinical")), ("AIBL", ("images", "clinical")),
                            ("NACC", ("mri", "clinical"))):
        for folder in folders:
            (snakemake_workdir / "data" / cohort / folder).mkdir(parents=True)
    process = run_snakemake(snakemake_workdir, "-n", "-p", "--until", "results_table", configfiles=())
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    rows = config["report"]["variants"]
    assert rows == ["resnet50", "transformer", "concat", "daft", "cross_attention", "hyperfusion", "mmcl", "tip",
                    "vita", "citab"]
    counts = {line.split()[0]: int(line.split()[1]) for line in process.stdout.split("Job stats:", 1)[1].splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts["pretrain"] == 1  # citab only: a baseline cannot pretrain across tables
    assert counts["pretrain_cohort"] == 9  # MMCL, TIP, ViTa x ADNI, AIBL, NACC
    assert counts["finetune"] == counts["evaluate"] == len(rows) * 3
    self_supervised = ("mmcl", "tip", "vita")
    pretraining = [line for line in process.stdout.splitlines() if "workflow.train pretrain --variant" in line]
    for variant in self_supervised:
        for cohort in ("ADNI", "AIBL", "NACC"):
            (command,) = [c for c in pretraining if f"--variant {variant} --cohorts {cohort} " in c]
            assert f"--weights results/pretrain/{variant}/{cohort}/model.safetensors" in command
            assert f"--settings results/pretrain/{variant}/{cohort}/settings.json" in command
    commands = [line for line in process.stdout.splitlines() if "workflow.train finetune" in line]
    for variant in rows:
        for cohort in ("ADNI", "AIBL", "NACC"):
            (command,) = [c for c in commands if f"--variant {variant} --cohort {cohort} " in c]
            assert ("--pretrained results/pretrain/citab/model.safetensors " in command) == (variant == "citab")
            own_cohort = f"--pretrained results/pretrain/{variant}/{cohort}/model.safetensors "
            assert (own_cohort in command) == (variant in self_supervised)
            assert command.count("--pretrained ") == (variant in (*self_supervised, "citab"))
    # Each job's own harness settings: the settings files the local rules write (nothing else runs).
    seed = config["finetune"]["seeds"][0]
    files = {(variant, cohort): f"results/pretrain/{variant}/{cohort}/settings.json"
             for variant in self_supervised for cohort in ("ADNI", "AIBL", "NACC")}
    files["daft", "AIBL"] = f"results/finetune/daft/AIBL/seed-{seed}/settings.json"
    files["hyperfusion", "NACC"] = f"results/finetune/hyperfusion/NACC/seed-{seed}/settings.json"
    assert all(f"--settings {files[key]}" in command for key in [("daft", "AIBL"), ("hyperfusion", "NACC")]
               for command in commands if f"--variant {key[0]} --cohort {key[1]} " in command)
    run_snakemake(snakemake_workdir, *files.values(), "--cores", "1", configfiles=())
    written = {key: json.loads((snakemake_workdir / path).read_text()) for key, path in files.items()}
    for variant in self_supervised:
        for cohort in ("ADNI", "AIBL", "NACC"):
            assert written[variant, cohort]["epochs"] == 500
            assert written[variant, cohort]["corruption_rate"] == (0.0 if variant == "vita" or cohort == "NACC" else 0.3)
    daft_aibl = written["daft", "AIBL"]
    assert (daft_aibl["selection"], daft_aibl["augment_probability"]) == ("auc", 0.95)
    assert (daft_aibl["corruption_rate"], daft_aibl["epochs"]) == (0.3, 100)
    hyperfusion = written["hyperfusion", "NACC"]
    assert (hyperfusion["selection"], hyperfusion["batch_size"]) == ("balanced_accuracy", 32)
