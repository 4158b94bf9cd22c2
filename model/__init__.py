"""CITab in PyTorch: 3D ResNet image encoder, SAT tabular encoder with P-MoLin, fusion, heads, losses;
and the comparison models of Table 1 (docs/baselines.md): the supervised ones
(``model.baselines``) and the self-supervised ones (``model.ssl_baselines``).

Fu et al., "Unleashing the Power of Image-Tabular Self-Supervised Learning via Breaking
Cross-Tabular Barriers", AAAI 2026. The model follows the official code as
``docs/model.md`` describes it (the paper configuration has 87,587,394 parameters
for pretraining and 82,800,963 for fine-tuning with 768-wide header vectors).

This package imports nothing from ``workflow/``: the pipeline passes it plain tensors.

Public API (stable names; the training stage codes against these)
-----------------------------------------------------------------
Building a model (``model.registry``)::

    list_variants(family=None) -> list[str]
        Registered variant names, sorted; ``family`` "citab", "supervised" or "ssl_per_cohort" filters.
        CITab family: "citab" (the paper model) and the ablations "citab_no_header",
        "citab_no_mask", "citab_no_pmolin", "citab_cross_attention", "citab_no_itc",
        "citab_no_itm" (Table 2) and "citab_e3" ... "citab_e6" (Table 3).
        Supervised family (Table 1 baselines, docs/baselines.md): "resnet50", "transformer",
        "concat", "daft", "cross_attention" (this project's design), "hyperfusion".
        Self-supervised family "ssl_per_cohort" (docs/baselines.md 7-10): "mmcl", "tip", "vita"
        (this project's version).
    variant_info(name) -> VariantInfo(name, family, class_path; properties pretrains_across_tables,
                                      pretrains_per_cohort, model_class, input_names, pretrain_input_names)
        family "citab" (pretrains_across_tables True: pretrain on all cohorts, then fine-tune),
        "supervised" (trained from scratch per cohort, bound to that cohort's table) or
        "ssl_per_cohort" (pretrains_per_cohort True: pretrained on one cohort's training rows,
        then fine-tuned on that cohort). KeyError for an unknown name.
    variant_config(name) -> dict
        The full constructor arguments of a variant (a fresh copy; paper sizes), without the header
        bank / table.
    build_model(name, header_bank=None, *, table=None, **overrides) -> CITab | baseline
        CITab variants: ``header_bank`` float tensor [N, D_h], the frozen header vectors (row =
        column id), required; ``table`` ignored. ``overrides``: any CITab constructor argument:
        ``stage`` ("pretrain": ITC projection heads + ITM head, the default; "finetune": the
        classifier only, so parameter counts match the paper's), resnet_depth (10/18/34/50),
        resnet_widths (4 ints), embed_dim, num_layers, fusion_layers, num_heads, num_experts,
        expert_hidden, fusion_mlp_ratio, projection_dim, image_head_hidden, num_classes,
        temperature, hard_negatives ("sample" | "argmax"). Unknown keys raise TypeError. There is
        no image-token setting: image tokens carry no position embedding, so any input size works
        (the token count is the ResNet map's size).
        Baselines: ``table`` (a TableSpec of the cohort) required, ``header_bank`` ignored.
        ``overrides``: the same ``model:`` section plus ``stage``; each baseline takes the keys of
        its own constructor (e.g. transformer: embed_dim, num_layers, num_heads, num_classes;
        concat: resnet_*, in_channels, embed_dim as its MLP width, num_classes) and ignores the
        other models' keys; a key no registered model takes raises TypeError naming the valid
        keys; ``stage`` other than "finetune" raises ValueError for a supervised baseline (no
        pretraining stage); a self-supervised one takes "pretrain" or "finetune" (default) and its
        own sizes besides the shared ones (ViTa: tabular_dim, tabular_layers, tabular_heads;
        TIP: mask_rate).
        The pipeline passes the ``model:`` config section (workflow/schemas/model.schema.yaml: sizes
        only) as overrides: ``build_model(variant, bank.embeddings, stage=..., **config["model"])``
        or ``build_model(variant, table=spec, stage="finetune", **config["model"])``.
    model.config: dict of the constructor arguments (JSON-serialisable, without the bank / table):
        ``CITab(header_bank, **config)`` or ``build_model(variant, table=spec, **config)`` rebuilds
        the same architecture.

Describing a cohort's table (``model.table_spec``)::

    TableSpec(column_names: tuple[str, ...], cardinalities: tuple[int, ...])
        cardinality 0 = continuous, K > 0 = categorical with codes 0..K-1; ``num_columns``;
        ``TableSpec.from_columns(entries)`` from a cohort's config/columns.yaml entries;
        ``to_dict()`` / ``TableSpec(**d)`` for a checkpoint's metadata.

Classifying (every model, CITab included)::

    Model.input_names: tuple[str, ...]   the batch entries classify() takes, in order, from
        "image"     float [B, 1, X, Y, Z]
        "values"    float [B, C]   z-scored continuous, integer codes for categorical, 0 where missing
        "missing"   bool  [B, C]   True = the cell is missing
        "col_ids"   long  [B, C]   (CITab) header-bank rows
        "pad_mask"  bool  [B, C]   (CITab) True = padded
      CITab ("image", "values", "col_ids", "pad_mask"); resnet50 ("image",); transformer
      ("values", "missing"); concat and daft ("image", "values": raw values, as the released
      code); cross_attention and hyperfusion ("image", "values", "missing").
      mmcl ("image",); tip and vita ("image", "values", "missing").
    classify(*inputs) -> logits [B, num_classes]; model.stage ("finetune" for every supervised baseline).
    HyperFusion only: prepare_from_training_rows(values [N, C], missing [N, C], labels [N],
        epochs=250, lr=1e-3, seed=2022, class_weights=None, batch_size=32) -> dict, the first
        training stage (generator init from the input variance, tabular MLP prior), run once on
        the training rows before training; other models do not have it.

Pretraining (CITab and the self-supervised baselines)::

    Model.pretrain_input_names: the batch entries pretrain_losses() takes, in order: CITab as
      input_names; mmcl ("image", "values": the corrupted view); tip ("image", "values",
      "missing", "original_values", "original_missing": the corrupted view and the uncorrupted
      row); vita ("image", "values", "missing").
    pretrain_losses(*inputs) -> dict: "loss" (the scalar to backpropagate) and other scalars the
      training loop logs (itc, itm, mtr, ...), plus tensors it ignores (logits, labels).
    load_pretrained_encoders(state_dict) -> LoadReport, encoder_parameters(), head_parameters(),
      freeze_encoders(), encoder_state_dict() on the fine-tuning model (``model.weights``).

Reading the header bank (``model.header_bank``)::

    load_header_bank(path) -> HeaderBank
        ``HeaderBank.embeddings`` float32 [N, D_h], ``HeaderBank.headers`` list[str] (row order),
        ``HeaderBank.metadata`` dict, ``HeaderBank.column_ids(header_texts) -> list[int]``
        (KeyError naming the missing text).

Using a model (``model.citab.CITab``; all inputs batch-first)::

    image     float [B, 1, X, Y, Z]
    values    float [B, C]      standardised cell values (missing cells already 0)
    col_ids   long  [B, C]      row index into the header bank (any valid id on padded cells)
    pad_mask  bool  [B, C]      True = padded (not a column of this row's cohort); None = no padding

    pretrain_losses(image, values, col_ids, pad_mask=None, generator=None) -> dict[str, Tensor]
        (stage "pretrain", B >= 2) keys: "loss" (the scalar to backpropagate: (itc + itm) / 2, or
        the single loss a w/o-ITC / w/o-ITM variant trains); "itc" scalar and "itc_logits" [B, B]
        (always present: ITM negatives are drawn from them; no gradient in the w/o-ITC variant);
        when ITM is trained (not in citab_no_itm): "itm" scalar, "itm_logits" [3B, 2],
        "itm_labels" [3B] (B ones then 2B zeros), "itm_accuracy" scalar.
    classify(image, values, col_ids, pad_mask=None, return_routing=False)
        (stage "finetune") -> logits [B, num_classes]; with return_routing=True -> (logits, routing) where routing is
        a list (one per tabular layer) of softmax weights [B, C+1, E] (token 0 = CLS), or an empty
        list for the plain-FFN variant.
    fused_cls(image, values, col_ids, pad_mask=None) -> [B, embed_dim]  (fused CLS; online probes)
    encoder_state_dict() -> dict[str, Tensor]
        Weights (and BatchNorm statistics) of the three encoders: image_encoder.*,
        tabular_encoder.*, fusion.*. The header bank is a non-persistent buffer: it is never in a
        state dict; build the fine-tuning model on the same header bank file.
    load_pretrained_encoders(state_dict) -> LoadReport(missing: list[str], unexpected: list[str])
        Loads encoder weights from a pretraining state dict (whole-model or encoder_state_dict);
        ITC projection heads and the ITM head are skipped, the classifier keeps its fresh init.
        Raises RuntimeError on any missing encoder weight or shape mismatch; ``unexpected``
        lists the keys that were skipped.
    encoder_parameters() -> iterator of the encoders' parameters (for the "frozen" strategy)
    freeze_encoders() -> None  (requires_grad=False on the encoders; classifier stays trainable)
    head_parameters(), config (dict of constructor arguments, JSON-serialisable)

Under DDP, route the wrapper's forward to pretrain_losses / classify; the w/o-ITC variant leaves
the projection heads without gradients and the w/o-ITM variant the fusion and ITM head, so those
need ``find_unused_parameters=True``. A supervised baseline's ``forward`` is its ``classify``, so
DDP wraps it as it is; supervised baselines have no pretraining methods. The self-supervised ones,
like CITab, have no ``forward``: the training loop routes DDP's forward to ``pretrain_losses``.
Baselines that read the table keep the TableSpec they were built for as ``model.table``.
"""

from __future__ import annotations

import importlib

# Each public name -> the module that defines it. They are imported on first use (PEP 562), so that
# importing a light module of this package (model.registry, to plan the DAG) does not import torch.
_EXPORTS = {
    "CITab": "model.citab",
    "HeaderBank": "model.header_bank",
    "LoadReport": "model.weights",
    "TableSpec": "model.table_spec",
    "VariantInfo": "model.registry",
    "build_model": "model.registry",
    "list_variants": "model.registry",
    "load_header_bank": "model.header_bank",
    "variant_config": "model.registry",
    "variant_info": "model.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
