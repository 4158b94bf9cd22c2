"""Figures 3-5 of the paper, from a fine-tuned CITab and the cohorts' tables.

* **Figure 3, expert activation.** Each token of a P-MoLin layer is routed over the E experts by a
  softmax over its similarity to E prototypes (``model.tabular.PMoLin``). For every feature (column)
  the figure shows the share of rows whose token of that feature gives its largest routing weight to
  each expert: (a) for every feature of one cohort, (b) for one feature the cohorts share (age)
  across the cohorts.
* **Figure 4, tabular embedding.** A 2-D t-SNE of the feature tokens of one cohort (one point per row
  and feature, coloured by feature) together with the E prototypes of the same P-MoLin layer. The
  tokens are those the layer routes: the layer's input after its second LayerNorm, the space in
  which the prototypes are compared with tokens.
* **Figure 5, fused embedding.** A 2-D t-SNE of the fused CLS vector (the classifier's input) of the
  rows of every cohort, colour = cohort, marker = diagnosis; one panel for CITab and one for the
  "w/o header embedding" variant.

The paper says neither which weights, which P-MoLin layer nor which rows it used. Here one
fine-tuned run (``report.figures``: variant, the cohort whose fine-tuned weights are used and the
seed) is applied to the rows of every cohort: CITab reads any cohort's columns through the header
bank, so one model gives one embedding space for all cohorts. The layer and the rows (split,
at most ``max_rows`` per cohort, a seeded sample) are settings too. Each figure states all of
them under its title, and its data (what is plotted) is written beside it as a TSV.

The functions that compute figure data take a model and tensors, so they are tested on a small
CITab built in the test; ``figure3`` / ``figure4`` / ``figure5`` load the files and plot.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

# What a figure shows is planned with the DAG (workflow.paper, without torch).
from workflow.settings import Figure3Settings, Figure4Settings, Figure5Settings, FigureRun

log = logging.getLogger(__name__)

SPLITS_OF = {"all": ("train", "val", "test"), "train": ("train",), "val": ("val",), "test": ("test",)}
DIAGNOSIS_MARKERS = ("o", "^", "s", "D", "v", "P")


# --- inputs -----------------------------------------------------------------------------------------------


def load_model(run: FigureRun, encoder: str, columns: str):
    """The fine-tuned CITab of ``run`` in eval mode, on the header bank it was trained with
    (``encoder``'s); ``columns`` is the columns.yaml of the cohort it was fine-tuned on."""
    from workflow.training_rows import read_columns
    from workflow.train import load_checked_header_bank, load_fine_tuned

    bank = load_checked_header_bank(run.header_bank, encoder)
    model, _ = load_fine_tuned(run.weights, bank, run.evaluate, read_columns(columns), torch.device("cpu"))
    return model.eval(), bank


def load_cohort(cohort: str, table: str, columns: str, bank, split: str, max_rows: int, seed: int):
    """The rows of ``split`` ("all" = train + val + test) of one cohort, at most ``max_rows`` of
    them (a seeded sample, in table order)."""
    from model.data import CohortRows
    from workflow.train import load_rows

    parts = [load_rows(cohort, table, columns, bank, name) for name in SPLITS_OF[split]]
    parts = [part for part in parts if len(part)]
    if not parts:
        raise ValueError(f"{table}: cohort {cohort} has no rows in split {split!r}")
    keys = [key for part in parts for key in part.keys]
    volumes = [volume for part in parts for volume in part.volumes]
    chosen = np.arange(len(keys))
    if len(keys) > max_rows:
        chosen = np.sort(np.random.default_rng(seed).choice(len(keys), size=max_rows, replace=False))
    return CohortRows(
        cohort=cohort, keys=[keys[i] for i in chosen], volumes=[volumes[i] for i in chosen],
        values=np.concatenate([part.values for part in parts])[chosen],
        missing=np.concatenate([part.missing for part in parts])[chosen],
        col_ids=parts[0].col_ids, column_names=parts[0].column_names,
        labels=np.concatenate([part.labels for part in parts])[chosen],
    )


def table_inputs(rows) -> tuple[torch.Tensor, torch.Tensor]:
    """(values float [N, C], col_ids long [N, C]) of one cohort's rows (no padding: one cohort)."""
    values = torch.from_numpy(rows.values).float()
    col_ids = torch.from_numpy(rows.col_ids).long().expand(len(rows), -1)
    return values, col_ids


# --- figure data (model + tensors in, arrays out) -------------------------------------------------------


@torch.no_grad()
def routing_weights(model, values: torch.Tensor, col_ids: torch.Tensor, layer: int) -> torch.Tensor:
    """P-MoLin routing weights [N, C+1, E] of tabular layer ``layer`` (token 0 = CLS).

    Only the tabular encoder runs: its routing does not depend on the image (the same weights as
    ``CITab.classify(..., return_routing=True)``).
    """
    _, routing = model.tabular_encoder(values, col_ids, None)
    if not routing:
        raise ValueError("the model has no P-MoLin layer (w/o P-MoLin variant): nothing routes tokens to experts")
    return routing[layer]


def expert_shares(routing: torch.Tensor, feature_names: list[str]) -> pd.DataFrame:
    """Share of rows whose token of each feature has its largest routing weight on each expert.

    Args:
        routing: [N, C+1, E] routing weights (token 0 = CLS, tokens 1..C = the features).
        feature_names: the C features, in column order.

    Returns:
        Rows = features, columns = experts 1..E; each row sums to 1.
    """
    winners = routing[:, 1:, :].argmax(dim=-1).numpy()  # [N, C]
    experts = routing.shape[-1]
    counts = np.stack([np.bincount(winners[:, j], minlength=experts) for j in range(winners.shape[1])])
    shares = counts / winners.shape[0]
    return pd.DataFrame(shares, index=pd.Index(feature_names, name="feature"),
                        columns=[f"expert {e + 1}" for e in range(experts)])


@torch.no_grad()
def routed_tokens(model, values: torch.Tensor, col_ids: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(feature tokens [N, C, D], prototypes [E, D]) of P-MoLin layer ``layer``: the tokens as that
    layer's P-MoLin receives them (after the layer's second LayerNorm), where routing compares them
    with the prototypes."""
    from model.tabular import PMoLin

    pmolin = model.tabular_encoder.layers[layer].ffn
    if not isinstance(pmolin, PMoLin):
        raise ValueError(f"tabular layer {layer} has no P-MoLin (w/o P-MoLin variant)")
    captured = {}
    handle = pmolin.register_forward_pre_hook(lambda module, inputs: captured.setdefault("tokens", inputs[0]))
    try:
        model.tabular_encoder(values, col_ids, None)
    finally:
        handle.remove()
    return captured["tokens"][:, 1:, :].detach().clone(), pmolin.prototypes.detach().clone()


@torch.no_grad()
def fused_embeddings(model, dataset, batch_size: int = 16) -> np.ndarray:
    """Fused CLS vectors [N, D] (the classifier's input) of every item of an ``ImageTableDataset``."""
    from torch.utils.data import DataLoader

    vectors = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        vectors.append(model.fused_cls(batch["image"], batch["values"], batch["col_ids"], None).numpy())
    return np.concatenate(vectors)


def tsne_2d(points: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    """2-D t-SNE of ``points`` [N, D]; the perplexity is lowered to (N - 1) / 3 when N is small."""
    from sklearn.manifold import TSNE

    if len(points) < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {len(points)}")
    effective = min(float(perplexity), (len(points) - 1) / 3.0)
    return TSNE(n_components=2, perplexity=effective, init="pca", random_state=seed).fit_transform(
        np.asarray(points, dtype=np.float64))


# --- the three figures (files in, PNG + PDF + data TSV out) ---------------------------------------------


def _save(figure, png: str, pdf: str, dpi: int) -> None:
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=dpi, bbox_inches="tight")
    figure.savefig(pdf, bbox_inches="tight")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure3_data(model, cohorts: dict, feature_cohort: str, shared_feature: str, layer: int) -> pd.DataFrame:
    """Figure 3's shares as a long table: panel (a: every feature of ``feature_cohort``; b:
    ``shared_feature`` in every cohort), cohort, feature, expert, share, rows.

    ``cohorts`` maps each cohort to its rows (``model.data.CohortRows``), in figure order.
    """
    records = []
    for cohort, rows in cohorts.items():
        shares = expert_shares(routing_weights(model, *table_inputs(rows), layer), rows.column_names)
        if cohort == feature_cohort:
            records += _long(shares, "a", cohort, len(rows))
        if shared_feature not in shares.index:
            raise ValueError(f"cohort {cohort} has no column {shared_feature!r} (report.figures.shared_feature)")
        records += _long(shares.loc[[shared_feature]], "b", cohort, len(rows))
    return pd.DataFrame.from_records(records)


def figure3(settings: Figure3Settings, png: str, pdf: str, data: str) -> pd.DataFrame:
    """Figure 3: (a) expert shares per feature of ``settings.feature_cohort``, (b) of
    ``settings.shared_feature`` per cohort.

    Args:
        settings: the run shown, the cohorts' files, the layer and which rows.
        png / pdf / data: outputs (``data``: :func:`figure3_data`'s table as TSV).

    Returns:
        The long table written to ``data``.
    """
    run, tables, layer = settings.run, settings.cohort_tables, settings.layer
    feature_cohort, shared_feature, split, max_rows = (settings.feature_cohort, settings.shared_feature,
                                                       settings.split, settings.max_rows)
    model, bank = load_model(run, settings.encoder, tables[run.cohort][1])
    cohorts = {cohort: load_cohort(cohort, table, columns, bank, split, max_rows, settings.seed)
               for cohort, (table, columns) in tables.items()}
    long = figure3_data(model, cohorts, feature_cohort, shared_feature, layer)
    Path(data).parent.mkdir(parents=True, exist_ok=True)
    long.to_csv(data, sep="\t", index=False, float_format="%.6f")

    plt = _pyplot()
    panel_a = long[long["panel"] == "a"].pivot(index="feature", columns="expert", values="share")
    panel_a = panel_a.reindex(list(dict.fromkeys(long.loc[long["panel"] == "a", "feature"])))
    panel_b = long[long["panel"] == "b"].pivot(index="cohort", columns="expert", values="share").reindex(list(tables))
    figure, axes = plt.subplots(1, 2, figsize=(12, 0.35 * len(panel_a) + 2.5),
                                gridspec_kw={"width_ratios": [3, 2]})
    _stacked_bars(axes[0], panel_a, f"(a) {feature_cohort}: expert with the largest routing weight, per feature")
    _stacked_bars(axes[1], panel_b, f"(b) feature '{shared_feature}' across cohorts")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, -0.01))
    figure.suptitle("Expert activation (share of rows per expert)")
    figure.text(0.01, -0.04, f"Weights: {run.describe()}. P-MoLin layer {layer + 1} of "
                f"{len(model.tabular_encoder.layers)}. Rows: split '{split}' (at most {max_rows} per cohort).",
                fontsize=7, ha="left", va="top", wrap=True)
    _save(figure, png, pdf, settings.dpi)
    plt.close(figure)
    return long


def _long(shares: pd.DataFrame, panel: str, cohort: str, rows: int) -> list[dict]:
    return [{"panel": panel, "cohort": cohort, "feature": feature, "expert": expert, "share": float(value), "rows": rows}
            for feature, row in shares.iterrows() for expert, value in row.items()]


def _stacked_bars(axis, shares: pd.DataFrame, title: str) -> None:
    """Horizontal bars, one per row of ``shares`` (rows sum to 1), stacked by expert."""
    left = np.zeros(len(shares))
    colours = _pyplot().get_cmap("tab10")
    for position, expert in enumerate(shares.columns):
        axis.barh(range(len(shares)), shares[expert].to_numpy(), left=left, color=colours(position), label=expert)
        left += shares[expert].to_numpy()
    axis.set_yticks(range(len(shares)), labels=list(shares.index), fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel("share of rows")
    axis.set_title(title, fontsize=9)


def figure4_data(model, rows, layer: int, perplexity: float, seed: int) -> pd.DataFrame:
    """Figure 4's points: the feature tokens of ``rows`` at P-MoLin layer ``layer`` (one per row and
    feature) and the layer's prototypes, scaled to unit length and embedded together by t-SNE. Columns: kind (token |
    prototype), feature (the column name, or "prototype <e>"), row (-1 for prototypes), x, y."""
    tokens, prototypes = routed_tokens(model, *table_inputs(rows), layer)
    count, features, _ = tokens.shape
    points = np.concatenate([tokens.reshape(count * features, -1).numpy(), prototypes.numpy()])
    # Routing compares directions (a token's dot product with each prototype), and the prototypes
    # are far shorter than the layer-normalised tokens: unscaled, they would sit together near the
    # origin, away from every token. So t-SNE sees unit-length vectors (cosine geometry).
    points = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
    xy = tsne_2d(points, perplexity, seed)
    return pd.DataFrame({
        "kind": ["token"] * (count * features) + ["prototype"] * len(prototypes),
        "feature": [rows.column_names[j] for _ in range(count) for j in range(features)]
        + [f"prototype {e + 1}" for e in range(len(prototypes))],
        "row": [i for i in range(count) for _ in range(features)] + [-1] * len(prototypes),
        "x": xy[:, 0], "y": xy[:, 1],
    })


def figure4(settings: Figure4Settings, table: str, columns: str, png: str, pdf: str, data: str) -> pd.DataFrame:
    """Figure 4: t-SNE of ``settings.cohort``'s feature tokens at P-MoLin layer ``settings.layer`` with
    its prototypes. ``table`` / ``columns``: that cohort's table.tsv and columns.yaml (and those of
    the cohort the run was fine-tuned on, when it is another).

    Writes ``data`` (:func:`figure4_data`'s table) and the plot; returns the data.
    """
    run, cohort, layer, split, max_rows = settings.run, settings.cohort, settings.layer, settings.split, settings.max_rows
    perplexity, seed = settings.perplexity, settings.seed
    model, bank = load_model(run, settings.encoder, columns)
    rows = load_cohort(cohort, table, columns, bank, split, max_rows, seed)
    frame = figure4_data(model, rows, layer, perplexity, seed)
    count, features = len(rows), len(rows.column_names)
    Path(data).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(data, sep="\t", index=False, float_format="%.5f")

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 7))
    colours = plt.get_cmap("tab20")
    for position, feature in enumerate(rows.column_names):
        points_of = frame[(frame["kind"] == "token") & (frame["feature"] == feature)]
        axis.scatter(points_of["x"], points_of["y"], s=6, alpha=0.6, color=colours(position % 20), label=feature)
    marks = frame[frame["kind"] == "prototype"]
    axis.scatter(marks["x"], marks["y"], s=90, marker="*", color="black", label="prototypes")
    for row in marks.itertuples():
        axis.annotate(row.feature.replace("prototype ", "P"), (row.x, row.y), xytext=(5, 5),
                      textcoords="offset points", fontsize=9, weight="bold")
    axis.legend(fontsize=7, markerscale=1.5, bbox_to_anchor=(1.02, 1), loc="upper left")
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(f"t-SNE of {cohort} feature tokens and the P-MoLin prototypes", fontsize=10)
    figure.text(0.01, 0.0, f"Weights: {run.describe()}. Tokens entering P-MoLin layer {layer + 1} of "
                f"{len(model.tabular_encoder.layers)} (after its LayerNorm), {count} rows x {features} features "
                f"(split '{split}'); t-SNE of unit-length vectors, perplexity {min(perplexity, (len(frame) - 1) / 3):.3g}, seed {seed}.",
                fontsize=7, ha="left", va="top", wrap=True)
    _save(figure, png, pdf, settings.dpi)
    plt.close(figure)
    return frame


def figure5_data(panels: dict, class_names: list[str], perplexity: float, seed: int) -> pd.DataFrame:
    """Figure 5's points: per panel, the fused CLS of every row of every cohort embedded by t-SNE.

    Args:
        panels: panel title -> (model, {cohort: ``ImageTableDataset`` of that cohort's rows}).
        class_names: diagnosis names in label order.

    Returns:
        Columns panel, cohort, subject, session, label_name, x, y.
    """
    frames = []
    for title, (model, datasets) in panels.items():
        vectors = [fused_embeddings(model, dataset) for dataset in datasets.values()]
        keys = [dataset.key(i) for dataset in datasets.values() for i in range(len(dataset))]
        labels = np.concatenate([dataset.labels() for dataset in datasets.values()])
        xy = tsne_2d(np.concatenate(vectors), perplexity, seed)
        frames.append(pd.DataFrame({
            "panel": title, "cohort": [k[0] for k in keys], "subject": [k[1] for k in keys],
            "session": [k[2] for k in keys], "label_name": [class_names[k] for k in labels],
            "x": xy[:, 0], "y": xy[:, 1],
        }))
    return pd.concat(frames, ignore_index=True)


def figure5(settings: Figure5Settings, png: str, pdf: str, data: str) -> pd.DataFrame:
    """Figure 5: t-SNE of the fused CLS of every cohort's rows, one panel per run (CITab, w/o
    header embedding), markers by diagnosis (``settings.class_names``).

    Writes ``data`` (:func:`figure5_data`'s table) and the plot; returns the data.
    """
    from model.data import ImageTableDataset
    from workflow.train import sample_settings

    tables, split, max_rows, seed = settings.cohort_tables, settings.split, settings.max_rows, settings.seed
    panels, class_names = settings.panels, list(settings.class_names)
    loaded = {}
    for title, run in panels.items():
        model, bank = load_model(run, settings.encoder, tables[run.cohort][1])
        images = sample_settings(run.evaluate, seed, 0.0)
        loaded[title] = (model, {cohort: ImageTableDataset([load_cohort(cohort, table, columns, bank, split, max_rows, seed)],
                                                           images)
                                 for cohort, (table, columns) in tables.items()})
    frame = figure5_data(loaded, class_names, settings.perplexity, seed)
    Path(data).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(data, sep="\t", index=False, float_format="%.5f")

    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.5), squeeze=False)
    colours = plt.get_cmap("tab10")
    for axis, title in zip(axes[0], panels):
        shown = frame[frame["panel"] == title]
        for c, cohort in enumerate(tables):
            for m, name in enumerate(class_names):
                points_of = shown[(shown["cohort"] == cohort) & (shown["label_name"] == name)]
                axis.scatter(points_of["x"], points_of["y"], s=22, alpha=0.75, color=colours(c),
                             marker=DIAGNOSIS_MARKERS[m % len(DIAGNOSIS_MARKERS)], label=f"{cohort} {name}")
        axis.set_title(title, fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0][-1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    described = "; ".join(f"{title}: {run.describe()}" for title, run in panels.items())
    figure.suptitle("t-SNE of fused CLS embeddings (colour = cohort, marker = diagnosis)", fontsize=11)
    figure.text(0.01, 0.0, f"Weights: {described}. Rows: split '{split}' of every cohort (at most {max_rows} "
                f"each); t-SNE per panel, seed {seed}.", fontsize=7, ha="left", va="top", wrap=True)
    _save(figure, png, pdf, settings.dpi)
    plt.close(figure)
    return frame
