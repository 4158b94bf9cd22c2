"""Training stage: pretraining, per-cohort fine-tuning and test-set evaluation.

Rules run it as a command line (``python -m workflow.train pretrain|finetune|evaluate ...``) so that
pretraining can be launched by ``torchrun`` and every job by ``workflow.gpu_slots``. Each job reads
its settings file (``--settings``: a :mod:`workflow.settings` object, written from the rule's
``params`` by a local rule), so that a changed setting reruns exactly the jobs it affects.

CITab variants pretrain once on every cohort together (rule ``pretrain``); the self-supervised
Table 1 baselines (MMCL, TIP, ViTa) pretrain once per cohort (rule ``pretrain_cohort``) and each
cohort's fine-tuning starts from its own cohort's weights.

Outputs (docs/interfaces.md section 6): ``paths.PRETRAINED_WEIGHTS`` or
``paths.COHORT_PRETRAINED_WEIGHTS`` + ``metrics.csv`` beside it; ``paths.FINETUNED_WEIGHTS`` +
``metrics.csv``; ``paths.EVAL_METRICS`` and ``paths.EVAL_PREDICTIONS``.
Each run keeps its resume point in ``<run folder>/checkpoints/`` (see :mod:`model.checkpoints`).

Module-level imports stay light (no torch): the rule files import this module to build params.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path

from model.augment_settings import AugmentSettings
from model.hashing import fingerprint
from workflow import paths
from workflow.provenance import file_sha256, write_record
from workflow.settings import (
    FINETUNE_PLAN_KEYS, FINETUNE_RUNTIME_KEYS, PRETRAIN_PLAN_KEYS, PRETRAIN_RUNTIME_KEYS, SETTINGS_TYPES,
    EvaluateSettings, FinetuneSettings, PretrainSettings, check_known, field_names, per_cohort, plain,
)

log = logging.getLogger(__name__)

# Per-epoch logs of a run (read by no other stage, so not in workflow.paths).
PRETRAIN_METRICS = f"{paths.PRETRAIN_DIR}/metrics.csv"
COHORT_PRETRAIN_METRICS = f"{paths.COHORT_PRETRAIN_DIR}/metrics.csv"
FINETUNE_METRICS = f"{paths.FINETUNE_DIR}/metrics.csv"

# Set by torchrun in the environment of each worker it starts (and not in its own).
TORCHRUN_WORKER_ENV = "TORCHELASTIC_RUN_ID"


# --- config -> rule params and inputs (called by rules/*.smk) ------------------------------------


def encoder_rows(config: dict) -> dict[str, dict]:
    """``headers.encoder_variants``: table rows that train a registered variant on another header
    encoder's bank (row name -> ``{variant, encoder}``, e.g. Table 2's BioBERT row)."""
    return config["headers"].get("encoder_variants", {})


def variant_info(model_variant: str):
    from model.registry import variant_info as registered

    return registered(model_variant)


def resolve_variant(variant: str, config: dict) -> tuple[str, bool]:
    """(registered model variant, start from pretrained encoders?) of a ``{variant}`` wildcard.

    ``finetune.scratch_variants`` maps a table-row name to the variant it fine-tunes from scratch
    (the "w/o multi-modal SSL" ablation); ``headers.encoder_variants`` maps one to a variant
    trained on another header encoder's bank (the BioBERT row); a supervised baseline always
    trains from scratch (it is bound to one cohort's columns and has no pretraining stage);
    otherwise (CITab, pretrained across tables, and the self-supervised baselines, pretrained per
    cohort) ``finetune.pretrained`` decides.
    """
    scratch = config["finetune"]["scratch_variants"]
    if variant in scratch:
        return scratch[variant], False
    model_variant = encoder_rows(config).get(variant, {}).get("variant", variant)
    info = variant_info(model_variant)
    has_pretraining = info.pretrains_across_tables or info.pretrains_per_cohort
    return model_variant, bool(config["finetune"]["pretrained"]) and has_pretraining


def pretrain_settings(config: dict) -> PretrainSettings:
    """The cross-table pretraining settings of the CITab variants."""
    return _pretrain(config["pretrain"], config, corruption_rate=0.0)


def cohort_pretrain_settings(config: dict, variant: str, cohort: str) -> PretrainSettings:
    """One cohort's pretraining settings of a self-supervised baseline: its
    ``pretrain.variant_settings`` entry over the shared settings, with that cohort's corruption
    rate only (a change to another cohort's leaves this job alone)."""
    shared = config["pretrain"]
    section = {**shared, **shared["variant_settings"].get(variant, {})}
    rate = per_cohort(section.get("corruption_rate", {"default": 0.0}), cohort)
    return _pretrain(section, config, corruption_rate=rate)


def finetune_settings(config: dict, variant: str, cohort: str) -> FinetuneSettings:
    """One cohort's fine-tuning settings of the row ``variant``: the variant's
    ``finetune.variant_settings`` entry over the shared settings, that cohort's rates only."""
    model_variant, pretrained = resolve_variant(variant, config)
    shared = config["finetune"]
    section = {**shared, **shared["variant_settings"].get(model_variant, {})}
    check_known(shared, FinetuneSettings, FINETUNE_RUNTIME_KEYS + FINETUNE_PLAN_KEYS, "finetune")
    values = {name: section[name] for name in field_names(FinetuneSettings) if name in shared}
    values.update(
        model_variant=model_variant, pretrained=pretrained, tabular_prior=section.get("tabular_prior"),
        augment_probability=per_cohort(section["augment_probability"], cohort),
        corruption_rate=per_cohort(section["corruption_rate"], cohort),
        **{name: config["pretrain"][name] for name in ("image_shape", "augment", "cache_volumes")},
        model=config["model"],
    )
    return FinetuneSettings.from_params(plain(values), source=f"finetune settings of {variant} on {cohort}")


def evaluate_settings(config: dict, variant: str) -> EvaluateSettings:
    """The evaluation settings of the row ``variant`` (architecture and input shape as in training)."""
    values = {
        "model_variant": resolve_variant(variant, config)[0], "model": config["model"],
        "image_shape": config["pretrain"]["image_shape"], "cache_volumes": config["pretrain"]["cache_volumes"],
        "class_names": config["finetune"]["class_names"], **config["evaluate"],
    }
    values = {name: values[name] for name in field_names(EvaluateSettings)}
    return EvaluateSettings.from_params(plain(values), source=f"evaluate settings of {variant}")


def _pretrain(section: dict, config: dict, corruption_rate: float) -> PretrainSettings:
    check_known(config["pretrain"], PretrainSettings, PRETRAIN_RUNTIME_KEYS + PRETRAIN_PLAN_KEYS, "pretrain")
    values = {name: section[name] for name in field_names(PretrainSettings) if name in config["pretrain"]}
    values.update(corruption_rate=corruption_rate, model=config["model"])
    return PretrainSettings.from_params(plain(values), source="pretrain settings")




def configured_encoder(config: dict, variant: str | None = None) -> str:
    """The header encoder of a ``{variant}`` row: its own for a ``headers.encoder_variants`` row,
    else the one the config asks for (the ``{encoder}`` of ``paths.HEADER_BANK``)."""
    row = encoder_rows(config).get(variant) if variant else None
    return row["encoder"] if row else config["headers"]["encoder"]


def header_bank_path(config: dict, variant: str | None = None) -> str:
    return paths.HEADER_BANK.format(encoder=configured_encoder(config, variant))


def pretrained_input(variant: str, config: dict, cohort: str | None = None) -> list[str]:
    """The pretrained weights the fine-tuning job of ``variant`` on ``cohort`` reads ([] when it
    starts from scratch): the cross-table weights of a CITab variant, or the weights of that cohort
    for a self-supervised baseline (``cohort`` then required)."""
    model_variant, pretrained = resolve_variant(variant, config)
    if not pretrained:
        return []
    if variant_info(model_variant).pretrains_per_cohort:
        if cohort is None:
            raise ValueError(f"variant {model_variant!r} is pretrained per cohort: pretrained_input needs the cohort")
        return [paths.COHORT_PRETRAINED_WEIGHTS.format(variant=model_variant, cohort=cohort)]
    # A row on another header encoder is pretrained on that encoder's bank: a pretraining run of its own.
    run = variant if variant in encoder_rows(config) else model_variant
    return [paths.PRETRAINED_WEIGHTS.format(variant=run)]


# --- shared loading -------------------------------------------------------------------------------


def load_checked_header_bank(path: str | Path, encoder: str):
    """The header bank at ``path``, checked to come from the configured ``encoder``.

    Raises ValueError naming the file and both encoders when it was built with another one.
    """
    from model.header_bank import load_header_bank

    bank = load_header_bank(path)
    built_with = bank.metadata.get("encoder")
    if built_with != encoder:
        raise ValueError(
            f"header bank '{path}' was built with encoder {built_with!r}, but the config asks for {encoder!r} "
            "(headers.encoder); rerun the embed_headers rule or fix the config"
        )
    return bank


def load_rows(cohort: str, table: str, columns: str, bank, split: str):
    from workflow.training_rows import load_cohort_rows

    header_ids = {text: row for row, text in enumerate(bank.headers)}
    return load_cohort_rows(cohort, table, columns, header_ids, split)


# Evaluation never augments; the augmentation settings only need to be valid.
NO_AUGMENT = AugmentSettings(flip_axes=(), flip_probability=0.0, max_rotation_deg=0.0, scale_range=0.0,
                             isotropic_scale=False, gamma_log_range=0.0, gamma_probability=0.0)


def sample_settings(settings: PretrainSettings | FinetuneSettings | EvaluateSettings, seed: int,
                    augment_probability: float, corruption_rate: float = 0.0, load_images: bool = True,
                    corrupt_every_row: bool = False):
    """How a job's dataset draws samples; evaluation settings carry no augmentation (none is applied)."""
    from model.data import SampleSettings

    return SampleSettings(
        image_shape=settings.image_shape, augment_probability=augment_probability,
        corruption_rate=corruption_rate, augment=getattr(settings, "augment", NO_AUGMENT), seed=seed,
        cache_volumes=settings.cache_volumes, load_images=load_images, corrupt_every_row=corrupt_every_row,
    )


def build(model_variant: str, bank, settings: PretrainSettings | FinetuneSettings | EvaluateSettings, stage: str,
          columns: list[dict] | None = None):
    """A fresh model of ``model_variant`` for ``stage`` ("pretrain" | "finetune") with the config's
    sizes (``settings.model``, the ``model`` section) on the header bank's vectors; a
    supervised baseline also gets its cohort's column layout from ``columns`` (the column entries
    of a cohort's columns.yaml). Checks the class names against the model's classes."""
    from model.registry import build_model
    from model.table_spec import TableSpec

    table = TableSpec.from_columns(columns) if columns else None
    model = build_model(model_variant, bank.embeddings, table=table, **settings.model, stage=stage)
    classes, class_names = model.config.get("num_classes"), getattr(settings, "class_names", None)
    if class_names is not None and classes != len(class_names):
        raise ValueError(f"finetune.class_names lists {len(class_names)} classes but model.num_classes is {classes}")
    return model


def preload(datasets: list, settings: PretrainSettings | FinetuneSettings) -> None:
    """With ``cache_volumes``, load every volume before the loaders start (forked workers share them)."""
    if settings.cache_volumes:
        for dataset in datasets:
            if dataset is not None:
                dataset.preload()


def worker_count(threads: int, processes: int, on_gpu: bool) -> int:
    """Data-loader workers per process: the job's spare threads on GPU; none on CPU (threads compute)."""
    return max(0, threads // max(processes, 1) - 1) if on_gpu else 0


# --- the three jobs -------------------------------------------------------------------------------


def run_pretrain(
    variant: str, cohorts: list[str], tables: list[str], columns: list[str], header_bank: str, encoder: str,
    settings: PretrainSettings, weights: str, metrics: str, gpus: int, threads: int, provenance: str | None = None,
    code: str | None = None,
) -> dict:
    """Pretrain ``variant`` on the training rows of ``cohorts`` (one process of the group).

    A CITab variant pretrains on every cohort together; a self-supervised baseline on exactly one
    cohort, with the table views its method contrasts (every row corrupted at the cohort's
    ``corruption_rate``, the uncorrupted row beside it).

    Args:
        variant: registered model variant.
        cohorts / tables / columns: cohort names and their ``table.tsv`` / ``columns.yaml``, aligned.
        header_bank: the header bank file; ``encoder``: the encoder the config asks for.
        settings: ``workflow.settings.pretrain_settings`` (CITab) or ``cohort_pretrain_settings``
            (a baseline).
        weights / metrics: output files.
        gpus: GPUs per job (0 = CPU); threads: CPU threads of the whole job.
        provenance: where the main process writes the job's record (``workflow.provenance``);
        code: the rule's code fingerprint, for the record.
    """
    import torch

    from model.data import ImageTableDataset
    from model.distributed import setup_processes, teardown_processes
    from model.registry import variant_info
    from model.training import LoopSettings, pretrain
    from workflow.training_rows import read_columns

    info = variant_info(variant)
    if info.pretrains_per_cohort and len(cohorts) != 1:
        raise ValueError(f"{variant} is pretrained on one cohort at a time (rule pretrain_cohort), got {cohorts}")
    if not (info.pretrains_per_cohort or info.pretrains_across_tables):
        raise ValueError(f"{variant} is a supervised baseline: it has no pretraining stage")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    processes = setup_processes(gpus, "pretrain.gpus", max(1, threads // world_size))
    if not processes.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    bank = load_checked_header_bank(header_bank, encoder)
    seed = settings.seed
    train_rows = [load_rows(c, t, k, bank, "train") for c, t, k in zip(cohorts, tables, columns)]
    val_rows = [load_rows(c, t, k, bank, "val") for c, t, k in zip(cohorts, tables, columns)]
    c_max = max(len(rows.col_ids) for rows in train_rows)
    # CITab's corruption rate is 0; a baseline's contrastive view corrupts every row
    train_set = ImageTableDataset(
        train_rows,
        sample_settings(settings, seed, settings.augment_probability, settings.corruption_rate, corrupt_every_row=True),
        corruption_pools=[(rows.values, rows.missing) for rows in train_rows], c_max=c_max,
    )
    val_rows = [rows for rows in val_rows if len(rows)]
    val_set = ImageTableDataset(val_rows, sample_settings(settings, seed, 0.0), c_max=c_max) if val_rows else None
    preload([train_set, val_set], settings)
    log.info("pretraining %s on %s: %d training rows (%s), %d validation rows, %d process(es) on %s",
             variant, cohorts, len(train_set), {r.cohort: len(r) for r in train_rows},
             len(val_set) if val_set else 0, processes.world_size, processes.device)
    torch.manual_seed(seed)  # the same initial weights in every process
    model = build(variant, bank, settings, "pretrain", read_columns(columns[0]) if info.pretrains_per_cohort else None)
    run_hash = fingerprint({"variant": variant, "settings": settings.as_params(), "world_size": processes.world_size,
                            "inputs": [file_sha256(p) for p in [*tables, *columns, header_bank]]})
    workers = worker_count(threads, processes.world_size, processes.device.type == "cuda")
    loop = LoopSettings(
        epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, weight_decay=settings.weight_decay,
        warmup_epochs=settings.warmup_epochs, seed=seed, checkpoint_every=settings.checkpoint_every,
        num_workers=workers, bf16=settings.bf16,
    )
    try:
        summary = pretrain(
            model, train_set, val_set, loop, processes, Path(weights).parent, Path(weights), Path(metrics), run_hash,
            val_every=settings.val_every, snapshot_every=settings.checkpoint_every,
            metadata={"variant": variant, "cohorts": json.dumps(cohorts), "model_config": json.dumps(model.config),
                      "encoder": encoder},
        )
        log.info("pretraining done: %s", summary)
        if not summary["ranks_agree"]:
            raise RuntimeError(f"processes ended with different weights: checksums {summary['parameter_checksums']}")
        if provenance and processes.is_main:
            write_record(
                provenance, stage="pretrain_cohort" if info.pretrains_per_cohort else "pretrain",
                identity={"variant": variant, "cohorts": list(cohorts)}, settings=settings.as_params(), run_hash=run_hash,
                inputs={**{f"table_{c}": t for c, t in zip(cohorts, tables)},
                        **{f"columns_{c}": k for c, k in zip(cohorts, columns)}, "header_bank": header_bank},
                outputs={"weights": weights, "metrics": metrics}, code_fingerprint=code)
    finally:
        teardown_processes(processes)
    return summary


def run_finetune(
    variant: str, cohort: str, seed: int, table: str, columns: str, header_bank: str, encoder: str,
    settings: FinetuneSettings, pretrained: str | None, best: str, metrics: str, gpus: int, threads: int,
    split: str | None = None, provenance: str | None = None, code: str | None = None,
) -> dict:
    """Fine-tune one cohort with one seed, from ``pretrained`` encoders (or from scratch when None).

    ``settings``: ``workflow.settings.finetune_settings``. Writes ``best`` (weights of the epoch
    with the best validation score under ``settings.selection``) and ``metrics`` (per-epoch CSV),
    then the job's record at ``provenance`` (``workflow.provenance``: ``split`` is the cohort's split
    file, recorded with the table; ``code`` the rule's code fingerprint).
    """
    import torch

    from model.checkpoints import CheckpointError, load_weights
    from model.data import ImageTableDataset
    from model.distributed import setup_processes
    from model.training import LoopSettings, finetune
    from workflow.training_rows import read_columns

    processes = setup_processes(gpus, "finetune.gpus", threads)
    bank = load_checked_header_bank(header_bank, encoder)
    train_rows = load_rows(cohort, table, columns, bank, "train")
    val_rows = load_rows(cohort, table, columns, bank, "val")
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise ValueError(f"{table}: cohort {cohort} needs training and validation rows "
                         f"(has {len(train_rows)} train, {len(val_rows)} val)")
    torch.manual_seed(seed)
    model = build(settings.model_variant, bank, settings, "finetune", read_columns(columns))
    with_images = "image" in model.input_names
    train_set = ImageTableDataset(
        [train_rows],
        sample_settings(settings, seed, settings.augment_probability, settings.corruption_rate, with_images),
        corruption_pools=[(train_rows.values, train_rows.missing)],
    )
    val_set = ImageTableDataset([val_rows], sample_settings(settings, seed, 0.0, load_images=with_images))
    preload([train_set, val_set], settings)
    if hasattr(model, "prepare_from_training_rows"):
        # HyperFusion's first stage: a tabular prior network and the weight generators' initialisation.
        prior = settings.tabular_prior
        if prior is None:
            raise ValueError(f"{settings.model_variant} needs finetune.variant_settings."
                             f"{settings.model_variant}.tabular_prior (epochs, lr, class_weights)")
        model.prepare_from_training_rows(
            torch.from_numpy(train_rows.values), torch.from_numpy(train_rows.missing),
            torch.from_numpy(train_rows.labels), epochs=prior["epochs"], lr=prior["lr"], seed=seed,
            class_weights=prior["class_weights"],
        )
    inputs = [table, columns, header_bank]
    if pretrained:
        state, stored = load_weights(pretrained, "pretrained weights")
        pretrained_on = json.loads(stored.get("cohorts", "[]"))
        if variant_info(settings.model_variant).pretrains_per_cohort and pretrained_on != [cohort]:
            # bound to one cohort's columns: another cohort's weights can fit by shape and still be wrong
            raise CheckpointError(f"pretrained weights '{pretrained}' were pretrained on {pretrained_on}, "
                                  f"not on cohort {cohort} alone")
        try:
            report = model.load_pretrained_encoders(state)
        except RuntimeError as error:
            raise CheckpointError(f"pretrained weights '{pretrained}' do not fit variant {settings.model_variant} "
                                  f"with the configured model sizes ({error})") from None
        log.info("loaded pretrained encoders from %s (skipped: %s)", pretrained, report.unexpected)
        inputs.append(pretrained)
    else:
        log.info("no pretrained weights: fine-tuning %s from scratch (w/o multi-modal SSL)", settings.model_variant)
    if settings.strategy == "frozen":
        if not hasattr(model, "freeze_encoders"):
            raise ValueError(f"finetune.strategy 'frozen' needs pretrained encoders; {settings.model_variant} "
                             "trains from scratch (set strategy: trainable for it under finetune.variant_settings)")
        model.freeze_encoders()
    loop = LoopSettings(
        epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, weight_decay=settings.weight_decay,
        warmup_epochs=None, seed=seed, checkpoint_every=settings.checkpoint_every,
        num_workers=worker_count(threads, 1, processes.device.type == "cuda"), bf16=settings.bf16,
        shuffle=settings.shuffle, drop_last=settings.drop_last,
    )
    run_hash = fingerprint({"variant": variant, "cohort": cohort, "seed": seed, "settings": settings.as_params(),
                            "inputs": [file_sha256(p) for p in inputs]})
    log.info("fine-tuning %s on %s (seed %d): %d train, %d val rows on %s", variant, cohort, seed,
             len(train_set), len(val_set), processes.device)
    result = finetune(
        model, train_set, val_set, loop, processes.device, Path(best).parent, Path(best), Path(metrics), run_hash,
        metadata={"variant": variant, "cohort": cohort, "seed": seed, "model_config": json.dumps(model.config)},
        selection=settings.selection, class_weights=settings.class_weights,
    )
    log.info("best epoch %d: validation %s", result["best_epoch"], result["best_val"])
    if provenance:
        write_record(provenance, stage="finetune", identity={"variant": variant, "cohort": cohort, "seed": seed},
                     settings=settings.as_params(), run_hash=run_hash,
                     inputs={"table": table, "split": split, "columns": columns, "header_bank": header_bank,
                             "pretrained": pretrained},
                     outputs={"weights": best, "metrics": metrics}, code_fingerprint=code)
    return result


def run_evaluate(
    variant: str, cohort: str, seed: int, table: str, columns: str, header_bank: str, encoder: str,
    settings: EvaluateSettings, weights: str, metrics_json: str, predictions: str, gpus: int, threads: int,
    provenance: str | None = None, code: str | None = None,
) -> dict:
    """Evaluate the best fine-tuned weights on the cohort's test split.

    Writes ``metrics_json`` (:func:`model.metrics.classification_metrics` plus the run's identity and
    run hash), ``predictions`` (one row per test subject: key, label, prediction, one probability per
    class, the run hash) and the job's record at ``provenance`` (``workflow.provenance``).
    """
    import pandas as pd

    from model.distributed import setup_processes
    from model.metrics import classification_metrics
    from model.training import predict
    from workflow.training_rows import read_columns

    processes = setup_processes(gpus, "evaluate.gpus", threads)
    bank = load_checked_header_bank(header_bank, encoder)
    class_names = list(settings.class_names)
    run_hash = fingerprint({"variant": variant, "cohort": cohort, "seed": seed, "settings": settings.as_params(),
                            "inputs": [file_sha256(p) for p in (table, columns, header_bank, weights)]})
    test_rows = load_rows(cohort, table, columns, bank, "test")
    if len(test_rows) == 0:
        raise ValueError(f"{table}: cohort {cohort} has no test rows to evaluate")
    model, metadata = load_fine_tuned(weights, bank, settings, read_columns(columns), processes.device)
    test_set = evaluation_dataset(test_rows, settings, seed, model)
    labels, probabilities, indices = predict(model, test_set, settings.batch_size, processes.device, settings.bf16)
    metrics = classification_metrics(labels, probabilities)
    present = sorted(set(labels.tolist()))
    result = {
        "variant": variant, "cohort": cohort, "seed": seed, "run_hash": run_hash, "split": "test",
        "class_names": class_names,
        "best_epoch": int(metadata.get("best_epoch", 0)), "selection": metadata.get("selection", ""), **metrics,
        "auc_note": "" if metrics["auc_complete"] else (
            f"AUC averaged over the scorable classes {[class_names[k] for k in metrics['auc_classes']]} only: "
            f"the test set holds classes {[class_names[k] for k in present]}"),
    }
    Path(metrics_json).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics_json).write_text(json.dumps(_json_ready(result), indent=2) + "\n")
    keys = [test_set.key(int(i)) for i in indices]
    frame = pd.DataFrame({
        "cohort": [k[0] for k in keys], "subject": [k[1] for k in keys], "session": [k[2] for k in keys],
        "label": labels, "label_name": [class_names[k] for k in labels],
        "prediction": probabilities.argmax(1), "prediction_name": [class_names[k] for k in probabilities.argmax(1)],
    })
    for k, name in enumerate(class_names):
        frame[f"prob_{name}"] = probabilities[:, k].round(6)
    frame["run_hash"] = run_hash
    frame.to_csv(predictions, sep="\t", index=False)
    if provenance:
        write_record(provenance, stage="evaluate", identity={"variant": variant, "cohort": cohort, "seed": seed},
                     settings=settings.as_params(), run_hash=run_hash,
                     inputs={"table": table, "columns": columns, "header_bank": header_bank, "weights": weights},
                     outputs={"metrics": metrics_json, "predictions": predictions}, code_fingerprint=code)
    log.info("%s %s seed %d test: acc %.3f auc %.3f f1 %.3f (n=%d)%s", variant, cohort, seed, metrics["accuracy"],
             metrics["auc"], metrics["f1"], metrics["n"], f" - {result['auc_note']}" if result["auc_note"] else "")
    return result


def load_fine_tuned(weights: str | Path, bank, settings: EvaluateSettings, columns: list[dict], device):
    """The fine-tuned model of ``settings.model_variant`` with the weights at ``weights``, on
    ``device``, and the weights' metadata (evaluation and prediction from a bundle share this).

    Raises CheckpointError naming the file when the weights do not fit the configured architecture.
    """
    from model.checkpoints import CheckpointError, load_weights

    state, metadata = load_weights(weights, "fine-tuned weights")
    model = build(settings.model_variant, bank, settings, "finetune", columns)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"fine-tuned weights '{weights}' do not fit variant {settings.model_variant} "
                              f"with the configured architecture ({error})") from None
    return model.to(device), metadata


def evaluation_dataset(rows, settings: EvaluateSettings, seed: int, model):
    """The un-augmented dataset that evaluation (and prediction from a bundle) feeds ``model``:
    ``rows`` (:class:`model.data.CohortRows`) at the configured input shape, volumes read only when
    the model takes images."""
    from model.data import ImageTableDataset

    sampling = sample_settings(settings, seed, 0.0, load_images="image" in model.input_names)
    return ImageTableDataset([rows], sampling)


def _json_ready(value):
    """NaN -> None so the metrics file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value


# --- command line ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workflow.train", description=__doc__.splitlines()[0])
    jobs = parser.add_subparsers(dest="job", required=True)
    for job in ("pretrain", "finetune", "evaluate"):
        sub = jobs.add_parser(job)
        sub.add_argument("--variant", required=True)
        sub.add_argument("--header-bank", required=True)
        sub.add_argument("--encoder", required=True)
        sub.add_argument("--settings", required=True, help="the job's settings file (workflow.settings)")
        sub.add_argument("--gpus", type=int, default=0)
        sub.add_argument("--threads", type=int, default=1)
        sub.add_argument("--provenance", default=None, help="where to write the job's record (workflow.provenance)")
        sub.add_argument("--code-fingerprint", default=None, help="the rule's code fingerprint, for the record")
        if job == "pretrain":
            sub.add_argument("--cohorts", nargs="+", required=True)
            sub.add_argument("--tables", nargs="+", required=True)
            sub.add_argument("--columns", nargs="+", required=True)
            sub.add_argument("--weights", required=True)
            sub.add_argument("--metrics", required=True)
        else:
            sub.add_argument("--cohort", required=True)
            sub.add_argument("--seed", type=int, required=True)
            sub.add_argument("--table", required=True)
            sub.add_argument("--columns", required=True)
        if job == "finetune":
            sub.add_argument("--pretrained", default=None)
            sub.add_argument("--split", default=None, help="the cohort's split file, for the record")
            sub.add_argument("--best", required=True)
            sub.add_argument("--metrics", required=True)
        if job == "evaluate":
            sub.add_argument("--weights", required=True)
            sub.add_argument("--metrics-json", required=True)
            sub.add_argument("--predictions", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m workflow.train``; errors end with a one-line message and exit code 1."""
    from workflow.gpu_slots import exit_with_parent
    from workflow.logs import log_to

    if TORCHRUN_WORKER_ENV in os.environ:
        # torchrun starts workers in sessions of their own: a kill of the job's process group misses
        # them. Without this, a worker whose torchrun was SIGKILLed trains on and writes checkpoints.
        exit_with_parent()
    args = _parser().parse_args(argv)
    common = dict(variant=args.variant, header_bank=args.header_bank, encoder=args.encoder,
                  gpus=args.gpus, threads=args.threads, provenance=args.provenance, code=args.code_fingerprint)
    with log_to(None):
        try:
            settings = SETTINGS_TYPES[args.job].read(args.settings)
            common["settings"] = settings
            if args.job == "pretrain":
                if not (len(args.cohorts) == len(args.tables) == len(args.columns)):
                    raise ValueError("--cohorts, --tables and --columns must list the same number of items")
                run_pretrain(cohorts=args.cohorts, tables=args.tables, columns=args.columns, weights=args.weights,
                             metrics=args.metrics, **common)
            elif args.job == "finetune":
                run_finetune(cohort=args.cohort, seed=args.seed, table=args.table, columns=args.columns,
                             pretrained=args.pretrained or None, best=args.best, metrics=args.metrics,
                             split=args.split, **common)
            else:
                run_evaluate(cohort=args.cohort, seed=args.seed, table=args.table, columns=args.columns,
                             weights=args.weights, metrics_json=args.metrics_json, predictions=args.predictions, **common)
        except Exception as error:  # noqa: BLE001 - report any failure as one clear line, traceback in the log
            logging.getLogger().exception("%s failed", args.job)
            print(f"ERROR ({args.job} {args.variant}): {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
