"""The `paper` target: Tables 2 and 3 (rows, intervals, paired tests, the paper's numbers, the
alternative header encoder), the header similarities, and the data behind Figures 3-5 (computed
on a small CITab built here). The two dry runs of config.yaml take most of the ~1 min budget."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, markdown_lines, run_snakemake

from model.data import CohortRows, ImageTableDataset, SampleSettings
from model.augment_settings import AugmentSettings
from model.registry import build_model
from workflow import figures, paths
from workflow.paper import resolve_layer
from workflow.report import write_header_similarity, write_results_table
from workflow.settings import (
    EvaluateSettings, Figure3Settings, Figure4Settings, Figure5Settings, FigureRun, HeaderSimilarityTableSettings,
    ResultTableSettings, Uncertainty,
)
from workflow.smk import REPO_ROOT

COHORTS = ["ADNI", "AIBL", "NACC"]
FEATURES = {"ADNI": ["age", "sex", "mmse", "adas13"], "AIBL": ["age", "mmse", "cdr"], "NACC": ["age", "naccmoca"]}
HEADERS = sorted({name for names in FEATURES.values() for name in names})


# --- figure data, on a small CITab ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_citab() -> torch.nn.Module:
    torch.manual_seed(0)
    bank = torch.randn(len(HEADERS), 12)
    model = build_model("citab", bank, stage="finetune", resnet_depth=10, resnet_widths=[4, 4, 8, 8], embed_dim=16,
                        num_layers=2, fusion_layers=1, num_heads=2, projection_dim=8, num_experts=4)
    return model.eval()


def cohort_rows(cohort: str, count: int, folder: Path | None = None, shape=(12, 14, 12)) -> CohortRows:
    rng = np.random.default_rng(len(cohort) + count)
    names = FEATURES[cohort]
    volumes = []
    for i in range(count):
        path = (folder or Path("unused")) / f"{cohort}_{i}.npy"
        if folder is not None:
            np.save(path, rng.random(shape, dtype=np.float32))
        volumes.append(str(path))
    return CohortRows(
        cohort=cohort, keys=[(cohort, f"{cohort}{i}", "M000") for i in range(count)], volumes=volumes,
        values=rng.normal(size=(count, len(names))).astype(np.float32), missing=np.zeros((count, len(names)), bool),
        col_ids=np.array([HEADERS.index(n) for n in names]), column_names=names,
        labels=rng.integers(0, 3, size=count),
    )


def test_figure3_shares_are_the_argmax_counts_of_the_routing_weights(small_citab) -> None:
    cohorts = {cohort: cohort_rows(cohort, 17) for cohort in COHORTS}
    layer = resolve_layer(-1, 2)
    data = figures.figure3_data(small_citab, cohorts, "ADNI", "age", layer)
    # The routing of the whole model's forward pass (image included), computed here.
    adni = cohorts["ADNI"]
    values, col_ids = figures.table_inputs(adni)
    with torch.no_grad():
        _, routing = small_citab.classify(torch.rand(17, 1, 16, 16, 16), values, col_ids, None, return_routing=True)
    winners = routing[layer][:, 1:, :].argmax(-1)  # token 0 is CLS
    panel_a = data[data["panel"] == "a"]
    assert list(dict.fromkeys(panel_a["feature"])) == FEATURES["ADNI"] and set(panel_a["cohort"]) == {"ADNI"}
    for j, feature in enumerate(FEATURES["ADNI"]):
        shares = panel_a[panel_a["feature"] == feature].set_index("expert")["share"]
        assert shares.sum() == pytest.approx(1.0)
        for e in range(4):
            assert shares[f"expert {e + 1}"] == pytest.approx(float((winners[:, j] == e).sum()) / 17)
    panel_b = data[data["panel"] == "b"]
    assert list(dict.fromkeys(panel_b["cohort"])) == COHORTS and set(panel_b["feature"]) == {"age"}
    assert panel_b.groupby("cohort")["share"].sum().to_numpy() == pytest.approx(np.ones(3))
    assert (data["rows"] == 17).all()


def test_figure4_embeds_every_row_feature_token_and_every_prototype(small_citab) -> None:
    rows = cohort_rows("ADNI", 9)
    tokens, prototypes = figures.routed_tokens(small_citab, *figures.table_inputs(rows), 0)
    assert tokens.shape == (9, 4, 16) and prototypes.shape == (4, 16)
    # These are the tokens the layer routes: their softmax similarity to the prototypes is its routing.
    routing = figures.routing_weights(small_citab, *figures.table_inputs(rows), 0)
    assert torch.allclose(torch.softmax(tokens @ prototypes.t(), -1), routing[:, 1:], atol=1e-6)
    data = figures.figure4_data(small_citab, rows, 0, perplexity=30, seed=0)
    tokens_shown = data[data["kind"] == "token"]
    assert len(tokens_shown) == 9 * 4 and (tokens_shown["feature"].value_counts() == 9).all()
    assert sorted(tokens_shown["row"].unique()) == list(range(9))
    assert list(data.loc[data["kind"] == "prototype", "feature"]) == [f"prototype {e}" for e in range(1, 5)]
    assert np.isfinite(data[["x", "y"]].to_numpy()).all()


def test_figure5_embeds_the_fused_cls_of_every_cohort_per_panel(small_citab, tmp_path: Path) -> None:
    settings = SampleSettings(image_shape=(12, 14, 12), augment_probability=0.0, corruption_rate=0.0,
                              augment=AugmentSettings(flip_axes=()), seed=0, cache_volumes=False)
    datasets = {cohort: ImageTableDataset([cohort_rows(cohort, count, tmp_path)], settings)
                for cohort, count in zip(COHORTS, (5, 4, 3))}
    embedded = figures.fused_embeddings(small_citab, datasets["AIBL"], batch_size=3)
    batch = {k: torch.stack([datasets["AIBL"][i][k] for i in range(4)]) for k in ("image", "values", "col_ids")}
    with torch.no_grad():
        expected = small_citab.fused_cls(batch["image"], batch["values"], batch["col_ids"], None)
    assert embedded.shape == (4, 16) and np.allclose(embedded, expected.numpy(), atol=1e-5)
    data = figures.figure5_data({"CITab": (small_citab, datasets), "w/o header": (small_citab, datasets)},
                                ["CN", "MCI", "DE"], perplexity=30, seed=0)
    for panel in ("CITab", "w/o header"):
        shown = data[data["panel"] == panel]
        assert shown["cohort"].value_counts().to_dict() == {"ADNI": 5, "AIBL": 4, "NACC": 3}
        labels = np.concatenate([d.labels() for d in datasets.values()])
        assert list(shown["label_name"]) == [["CN", "MCI", "DE"][k] for k in labels]
        assert list(shown["subject"])[:2] == ["ADNI0", "ADNI1"]


def test_a_layer_outside_the_model_is_named() -> None:
    assert resolve_layer(-1, 4) == 3 and resolve_layer(0, 4) == 0
    with pytest.raises(ValueError, match="P-MoLin layer 4 does not exist"):
        resolve_layer(4, 4)


def test_a_variant_without_itm_logs_its_pretraining_losses() -> None:
    """w/o ITM returns no ITM loss: the pretraining loop logs the losses it has instead of failing."""
    from model.distributed import Distributed
    from model.training import LossAverages

    torch.manual_seed(0)
    model = build_model("citab_no_itm", torch.randn(len(HEADERS), 12), stage="pretrain", resnet_depth=10,
                        resnet_widths=[4, 4, 8, 8], embed_dim=16, num_layers=1, fusion_layers=1, num_heads=2,
                        projection_dim=8)
    rows = cohort_rows("ADNI", 4)
    losses = model.pretrain_losses(torch.rand(4, 1, 16, 16, 16), *figures.table_inputs(rows))
    averages = LossAverages()
    averages.add(losses)
    logged = averages.means(Distributed(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")), "train_")
    assert logged["train_loss"] == pytest.approx(float(losses["itc"].detach())) and "train_itm" not in logged


# --- Tables 2 and 3 ------------------------------------------------------------------------------------


def write_evaluation(root: Path, variant: str, cohort: str, seed: int, labels: np.ndarray, probabilities: np.ndarray):
    from model.metrics import classification_metrics

    folder = root / paths.EVAL_METRICS.format(variant=variant, cohort=cohort, seed=seed)
    folder.parent.mkdir(parents=True, exist_ok=True)
    metrics = classification_metrics(labels, probabilities)
    folder.write_text(json.dumps({"variant": variant, "cohort": cohort, "seed": seed, **metrics}))
    predictions = root / paths.EVAL_PREDICTIONS.format(variant=variant, cohort=cohort, seed=seed)
    frame = pd.DataFrame({"cohort": cohort, "subject": [f"S{i}" for i in range(len(labels))], "session": "M000",
                          "label": labels, "prediction": probabilities.argmax(1)})
    for k, name in enumerate(("CN", "MCI", "DE")):
        frame[f"prob_{name}"] = probabilities[:, k]
    frame.to_csv(predictions, sep="\t", index=False)
    return str(folder), str(predictions)


def evaluations(root: Path, skills: dict[str, float], cohorts: list[str], seeds=(1, 2)) -> tuple[list[str], list[str]]:
    metric_files, prediction_files = [], []
    for variant, skill in skills.items():
        for c, cohort in enumerate(cohorts):
            labels = np.random.default_rng(c).integers(0, 3, size=40)  # the same test subjects for every row
            for seed in seeds:
                rng = np.random.default_rng([c, seed, len(variant)])
                logits = rng.normal(size=(40, 3)) + skill * np.eye(3)[labels]
                m, p = write_evaluation(root, variant, cohort, seed, labels, np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
                metric_files.append(m)
                prediction_files.append(p)
    return metric_files, prediction_files


def test_table2_keeps_an_unsupplied_encoder_row_tests_rows_and_sits_next_to_the_paper(tmp_path: Path) -> None:
    metric_files, prediction_files = evaluations(tmp_path, {"citab_no_header": 0.0, "citab": 3.0}, ["ADNI", "AIBL"])
    out = {name: str(tmp_path / name) for name in ("t.csv", "t.md", "t.tex", "p.csv", "p.md", "s.csv", "s.md")}
    names = {"citab": "CITab", "citab_no_header": "w/o header embedding", "citab_biobert": "BioBERT header embedding"}
    settings = ResultTableSettings(
        table_name="Table 2", caption="Table 2.", latex_label="tab:table2",
        variants=("citab_no_header", "citab_biobert", "citab"), cohorts=("ADNI", "AIBL"), method_names=names, decimals=3,
        uncertainty=Uncertainty(interval="bootstrap95", resamples=200, permutations=200),
        unavailable={"citab_biobert": "encoder not supplied"}, reference="citab")
    numeric = write_results_table(
        settings, metric_files, out["t.csv"], out["t.md"], out["t.tex"], prediction_files=prediction_files,
        tests_csv=out["s.csv"], tests_markdown_path=out["s.md"],
        paper_table=str(REPO_ROOT / paths.PAPER_TABLE2), comparison_csv=out["p.csv"], comparison_markdown_path=out["p.md"],
    )
    lines = markdown_lines(Path(out["t.md"]).read_text())
    assert lines[2].startswith("| w/o header embedding | ")
    assert lines[3] == "| BioBERT header embedding | " + " | ".join(["encoder not supplied"] * 6) + " |"
    # bootstrap cells "mean [lo, hi]"; the guessing row differs from CITab on 40 subjects: marked.
    cell = re.fullmatch(r"(\d\.\d{3}) \[(\d\.\d{3}), (\d\.\d{3})\]\*", lines[2].split(" | ")[1])
    assert cell and float(cell[2]) <= float(cell[1]) <= float(cell[3])
    assert "95 % bootstrap interval over test subjects" in Path(out["t.md"]).read_text()
    assert "paired permutation test" in Path(out["t.md"]).read_text()
    assert numeric.loc["citab_biobert", "status"] == "encoder not supplied"
    assert numeric.loc["citab_biobert", "ADNI_n_seeds"] == 0 and numeric.loc["citab", "ADNI_n_seeds"] == 2
    assert numeric.loc["citab", "ADNI_accuracy_lo"] <= numeric.loc["citab", "ADNI_accuracy"]
    tests = pd.read_csv(out["s.csv"])
    assert set(tests["variant"]) == {"citab_no_header"} and (tests["p_value"] < 0.05).all()
    assert (tests["n_subjects"] == 40).all() and (tests["n_seeds"] == 2).all()
    compared = "\n".join(markdown_lines(Path(out["p.md"]).read_text()))
    assert "| BioBERT header embedding | encoder not supplied (0.834) |" in compared
    assert "| citab_no_ssl | not run (0.828) |" in compared  # a paper row this table did not run
    assert r"\label{tab:table2}" in Path(out["t.tex"]).read_text()


def test_table3_averages_the_cohorts_per_seed(tmp_path: Path) -> None:
    metric_files, prediction_files = evaluations(tmp_path, {"citab_e3": 1.0, "citab": 1.0}, COHORTS)
    out = {name: str(tmp_path / name) for name in ("t.csv", "t.md", "t.tex", "p.csv", "p.md", "s.csv", "s.md")}
    settings = ResultTableSettings(
        table_name="Table 3", caption="Table 3.", latex_label="tab:table3", variants=("citab_e3", "citab"),
        cohorts=tuple(COHORTS), method_names={"citab": "E = 5", "citab_e3": "E = 3"}, decimals=3,
        uncertainty=Uncertainty(permutations=200), average_column=True, reference="citab")
    numeric = write_results_table(
        settings, metric_files, out["t.csv"], out["t.md"], out["t.tex"], prediction_files=prediction_files,
        tests_csv=out["s.csv"], tests_markdown_path=out["s.md"], paper_table=str(REPO_ROOT / paths.PAPER_TABLE3),
        comparison_csv=out["p.csv"], comparison_markdown_path=out["p.md"],
    )
    per_seed = [np.mean([json.loads(Path(f).read_text())["f1"] for f in metric_files
                         if "/citab/" in f and f"seed-{seed}/" in f]) for seed in (1, 2)]
    assert numeric.loc["citab", "Average_f1"] == pytest.approx(np.mean(per_seed))
    assert numeric.loc["citab", "Average_f1_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    header = markdown_lines(Path(out["t.md"]).read_text())[0]
    assert header.endswith("| NACC F1 | Average Acc | Average AUC | Average F1 |")
    assert r"\label{tab:table3}" in Path(out["t.tex"]).read_text()
    long = pd.read_csv(out["p.csv"])
    average = long[(long["variant"] == "citab") & (long["cohort"] == "Average") & (long["metric"] == "auc")].iloc[0]
    assert average["paper"] == pytest.approx(0.902)


def test_header_similarity_sits_next_to_the_paper_and_names_an_unsupplied_encoder(tmp_path: Path) -> None:
    report = tmp_path / "minilm.similarity.json"
    report.write_text(json.dumps({"mean_pairwise_cosine": 0.17, "n_headers": 30, "dim": 384}))
    settings = HeaderSimilarityTableSettings(encoders=("minilm", "biobert"), similarity_files={"minilm": str(report)},
                                             unavailable={"biobert": "encoder not supplied"}, decimals=3)
    table = write_header_similarity(settings, str(REPO_ROOT / paths.PAPER_TABLE2), str(tmp_path / "s.csv"),
                                    str(tmp_path / "s.md"))
    assert list(table["encoder"]) == ["minilm", "biobert", "bert-base-uncased"]
    lines = markdown_lines((tmp_path / "s.md").read_text())
    assert lines[2] == "| minilm | 0.170 | – | 30 |"
    assert lines[3] == "| biobert | encoder not supplied | 0.935 | – |"
    assert lines[4] == "| bert-base-uncased | not used by this configuration | 0.864 | – |"


# --- the DAG: config.yaml plans every row --------------------------------------------------------------


def paper_dry_run(workdir: Path) -> tuple[dict[str, int], str]:
    for cohort, folders in (("ADNI", ("images", "clinical")), ("AIBL", ("images", "clinical")),
                            ("NACC", ("mri", "clinical"))):
        for folder in folders:
            (workdir / "data" / cohort / folder).mkdir(parents=True)
    process = run_snakemake(workdir, "-n", "-p", "paper", configfiles=())
    counts = {line.split()[0]: int(line.split()[1]) for line in process.stdout.split("Job stats:", 1)[1].splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    return counts, process.stdout


def test_the_paper_config_plans_every_row_of_tables_2_and_3_for_every_cohort(snakemake_workdir: Path) -> None:
    """config.yaml alone, on empty download folders and with a BioBERT folder in place: every row of
    Tables 2 and 3 is fine-tuned and evaluated on the three cohorts; each row but w/o SSL has its
    own pretraining, the BioBERT row on BioBERT's header bank."""
    (snakemake_workdir / "data" / "encoders" / "biobert-base-cased-v1.1").mkdir(parents=True)
    counts, stdout = paper_dry_run(snakemake_workdir)
    report = yaml.safe_load((REPO / "config.yaml").read_text())["report"]
    assert report["table2"]["variants"] == ["citab_no_ssl", "citab_no_header", "citab_no_mask", "citab_no_pmolin",
                                            "citab_no_itc", "citab_no_itm", "citab_cross_attention", "citab_biobert",
                                            "citab"]
    assert report["table3"]["variants"] == ["citab_e3", "citab_e4", "citab", "citab_e6"]
    rows = list(dict.fromkeys(report["table2"]["variants"] + report["table3"]["variants"]))
    assert counts["finetune"] == counts["evaluate"] == len(rows) * 3
    assert counts["pretrain"] == len(rows) - 1  # w/o multi-modal SSL has none
    assert counts["embed_headers"] == 2  # BERT and BioBERT
    for rule in ("table2", "table3", "header_similarity_table", "figure3", "figure4", "figure5"):
        assert counts[rule] == 1
    commands = [line for line in stdout.splitlines() if "workflow.train finetune" in line]
    for variant in rows:
        for cohort in COHORTS:
            (command,) = [c for c in commands if f"--variant {variant} --cohort {cohort} " in c]
            bank = "biobert" if variant == "citab_biobert" else "bert-base-uncased"
            assert f"--header-bank results/headers/{bank}.safetensors" in command
            pretrained = {"citab_no_ssl": None}.get(variant, variant)
            assert (f"--pretrained results/pretrain/{pretrained}/" in command) == (pretrained is not None)
    (biobert_pretraining,) = [line for line in stdout.splitlines()
                              if "workflow.train pretrain" in line and "results/pretrain/citab_biobert/" in line]
    assert "--variant citab " in biobert_pretraining and "--encoder biobert " in biobert_pretraining


def test_without_the_alternative_encoder_its_row_is_left_out_and_the_dag_still_plans(snakemake_workdir: Path) -> None:
    counts, stdout = paper_dry_run(snakemake_workdir)
    assert counts["finetune"] == counts["evaluate"] == 11 * 3 and counts["embed_headers"] == 1
    assert "citab_biobert" not in stdout.replace("'citab_biobert': 'encoder not supplied'", "")


# --- the figure functions the rules call, on files ------------------------------------------------------


def test_figure_files_from_weights_tables_and_header_bank(tmp_path: Path, monkeypatch) -> None:
    """figure3 / figure4 / figure5 as the rules call them: a (freshly initialised) CITab saved as
    fine-tuned weights, the small training inputs of test_train_helpers; PNG + PDF + the data."""
    from test_train_helpers import ENCODER, write_training_inputs

    from model.checkpoints import save_weights, state_dict_tensors
    from workflow.train import build, load_checked_header_bank

    write_training_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    settings = EvaluateSettings.from_params({"model": {"resnet_depth": 10, "resnet_widths": [4, 4, 8, 8], "embed_dim": 16, "num_layers": 2,
                                 "fusion_layers": 1, "num_heads": 2, "projection_dim": 8, "num_classes": 3},
                "class_names": ["CN", "MCI", "DE"], "model_variant": "citab", "image_shape": [16, 16, 16],
                "cache_volumes": False, "batch_size": 4, "bf16": False})
    bank_path = paths.HEADER_BANK.format(encoder=ENCODER)
    torch.manual_seed(0)
    model = build("citab", load_checked_header_bank(bank_path, ENCODER), settings, "finetune")
    run = FigureRun(weights=paths.FINETUNED_WEIGHTS.format(variant="citab", cohort="ADNI", seed=1), variant="citab",
                    cohort="ADNI", seed=1, header_bank=bank_path, evaluate=settings)
    save_weights(run.weights, state_dict_tensors(model), {"variant": "citab"})
    tables = {c: (paths.TABLE.format(cohort=c), paths.TABLE_COLUMNS.format(cohort=c)) for c in COHORTS}
    out = {n: {ext: str(tmp_path / f"figure{n}.{ext}") for ext in ("png", "pdf", "tsv")} for n in (3, 4, 5)}
    common = dict(encoder=ENCODER, split="all", max_rows=400, seed=0, dpi=50)

    # through as_params / from_params, as the rules pass them
    figure3 = Figure3Settings(run=run, cohort_tables=tables, feature_cohort="ADNI", shared_feature="age", layer=1,
                              **common)
    shares = figures.figure3(Figure3Settings.from_params(figure3.as_params()), out[3]["png"], out[3]["pdf"],
                             out[3]["tsv"])
    written = pd.read_csv(out[3]["tsv"], sep="\t")
    assert len(written) == len(shares) and (written["rows"] == 18).all()  # 9 + 3 + 6 rows of every split
    assert np.allclose(written.groupby(["panel", "cohort", "feature"])["share"].sum(), 1.0)
    assert set(written.loc[written["panel"] == "b", "cohort"]) == set(COHORTS)

    figure4 = Figure4Settings(run=run, cohort="ADNI", layer=0, perplexity=30, **{**common, "max_rows": 6})
    figures.figure4(Figure4Settings.from_params(figure4.as_params()), tables["ADNI"][0], tables["ADNI"][1],
                    out[4]["png"], out[4]["pdf"], out[4]["tsv"])
    points = pd.read_csv(out[4]["tsv"], sep="\t")
    assert (points["kind"] == "token").sum() == 6 * 5 and (points["kind"] == "prototype").sum() == 5

    figure5 = Figure5Settings(panels={"CITab": run, "again": run}, cohort_tables=tables, class_names=("CN", "MCI", "DE"),
                              perplexity=30, **{**common, "split": "test"})
    figures.figure5(Figure5Settings.from_params(figure5.as_params()), out[5]["png"], out[5]["pdf"], out[5]["tsv"])
    fused = pd.read_csv(out[5]["tsv"], sep="\t")
    assert fused.groupby("panel")["cohort"].value_counts().to_dict() == {
        (panel, cohort): 6 for panel in ("CITab", "again") for cohort in COHORTS}
    for number in (3, 4, 5):
        assert Path(out[number]["png"]).read_bytes()[:4] == b"\x89PNG"
        assert Path(out[number]["pdf"]).read_bytes()[:4] == b"%PDF"
