"""TIP (Du et al., ECCV 2024): image-table pretraining by contrast, matching and masked reconstruction.

docs/baselines.md 9. Three encoders: a 3D ResNet, TIP's position-bound tabular transformer (the
encoder of the ``transformer`` baseline) and a fusion in which the tabular tokens attend to the
image tokens (:class:`model.fusion.CrossAttentionFusion`, the module of CITab's cross-attention
ablation). Pretraining averages three losses: image-table contrast (ITC) on a corrupted row, image-
table matching (ITM) with hard negatives, and masked tabular reconstruction (MTR) from the fused
tokens. Missing cells are [MASK] tokens hidden from attention in the tabular encoder (TIP's
``missing_tabular`` option); the fusion sees every token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from model.baselines.common import config_dict
from model.baselines.transformer import TabularTransformerEncoder
from model.fusion import CrossAttentionFusion
from model.heads import ProjectionHead, classifier, itm_head
from model.losses import HARD_NEGATIVE_MODES, itc_loss, itm_labels, sample_hard_negatives
from model.resnet3d import ResNet3D
from model.table_spec import TableSpec
from model.weights import PretrainedEncoders, check_stage, require_stage

__all__ = ["TIP", "masked_reconstruction_loss", "reconstruction_mask"]

FUSION_MLP_RATIO = 4.0


def reconstruction_mask(
    batch: int, num_columns: int, count: int, device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """bool [B, C]: in each row, ``count`` columns drawn uniformly without replacement (True = masked)."""
    scores = torch.rand(batch, num_columns, device=device, generator=generator)
    chosen = scores.topk(count, dim=1).indices
    return torch.zeros(batch, num_columns, dtype=torch.bool, device=scores.device).scatter_(1, chosen, True)


def masked_reconstruction_loss(
    categorical_logits: torch.Tensor | None,
    continuous_predictions: torch.Tensor | None,
    targets: torch.Tensor,
    scored: torch.Tensor,
    is_categorical: torch.Tensor,
    category_offsets: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """TIP's reconstruction loss, counted on the ``scored`` cells only.

    A categorical cell is a classification over every category of the table (TIP's single
    categorical predictor; the target is the cell's code plus its column's offset), a continuous
    cell a squared error. Each kind is averaged over its scored cells, and the loss is the mean of
    the kinds that have scored cells in the batch (TIP always halves the sum, which is undefined
    when a kind is absent, as in a table without categorical columns).

    Args:
        categorical_logits: float [B, C, K_total] logits per column token (None without categorical columns).
        continuous_predictions: float [B, C] one prediction per column token (None without continuous columns).
        targets: float [B, C], the original row (codes in categorical cells).
        scored: bool [B, C], True where the loss counts (masked and observed cells).
        is_categorical: bool [C].
        category_offsets: long [C], the first category index of each categorical column.

    Returns:
        (loss scalar, {"mtr_categorical", "mtr_continuous"}: each kind's mean, 0 when it has no scored cell).
    """
    terms, parts = [], {}
    anchor = next(t for t in (categorical_logits, continuous_predictions) if t is not None)
    for kind, predictions, columns in (("categorical", categorical_logits, is_categorical),
                                       ("continuous", continuous_predictions, ~is_categorical)):
        cells = scored & columns
        if predictions is None or not bool(cells.any()):
            parts[f"mtr_{kind}"] = anchor.new_zeros(()).float()
            continue
        if kind == "categorical":
            classes = (targets.round().long() + category_offsets)[cells]
            term = F.cross_entropy(predictions[cells].float(), classes)
        else:
            term = (predictions[cells].float() - targets[cells].float()).pow(2).mean()
        terms.append(term)
        parts[f"mtr_{kind}"] = term.detach()
    # no scored cell in the whole batch: a zero that keeps the predictors in the graph (DDP)
    loss = torch.stack(terms).mean() if terms else anchor.float().sum() * 0.0
    return loss, parts


class TIP(PretrainedEncoders, nn.Module):
    """3D ResNet + tabular transformer + cross-attention fusion; ITC + ITM + MTR heads, or a classifier.

    * image: trunk map [B, C_img, x, y, z]; its global pool feeds the image projection, the flat map
      (420 tokens for the paper shape) the fusion;
    * table: :class:`model.baselines.transformer.TabularTransformerEncoder` -> tokens [B, C+1, D]
      (CLS first; missing and masked cells are [MASK] tokens hidden as attention keys);
    * fusion: ``fusion_layers`` blocks of tabular self-attention, tabular -> image cross-attention
      and an MLP (x4), final LayerNorm -> [B, C+1, D]; the fused CLS is token 0; no attention mask;
    * pretraining heads: image ``ProjectionHead(C_img, C_img, P)``, tabular ``ProjectionHead(D, D, P)``
      on the tabular CLS, ITM ``Linear(D, 2)`` on the fused CLS, reconstruction ``Linear(D, K_total)``
      (categorical cells; absent without categorical columns) and ``Linear(D, 1)`` (continuous
      cells) on the fused column tokens;
    * fine-tuning: ``Linear(D, num_classes)`` on the fused CLS.

    Paper configuration, 14 continuous columns: 76,627,779 parameters for fine-tuning (trunk
    46,155,072 + tabular encoder 12,614,144 + fusion 17,857,024 + classifier 1,539); categorical
    columns add 512 per category.

    Args:
        table: the cohort's columns (order, cardinalities).
        stage: "pretrain" (projection, ITM and reconstruction heads) or "finetune" (classifier).
        resnet_depth: 10, 18, 34 or 50.
        resnet_widths: the 4 ResNet stage widths.
        in_channels: image channels.
        embed_dim: token width D of the tabular encoder and the fusion.
        num_layers: tabular transformer layers.
        fusion_layers: fusion blocks.
        num_heads: attention heads (tabular encoder and fusion; must divide D).
        projection_dim: ITC projection width P.
        num_classes: classifier outputs.
        temperature: fixed ITC temperature.
        hard_negatives: "sample" (in proportion to softmax of the ITC logits, TIP's code) or "argmax".
        mask_rate: share of each row's columns masked for reconstruction: round(mask_rate * C)
            columns (Python rounding: 7 / 4 / 10 for C = 14 / 7 / 21).

    Inputs: :meth:`classify` (``input_names``) image float [B, in_channels, X, Y, Z], values float
    [B, C], missing bool [B, C] (True = missing). :meth:`pretrain_losses` (``pretrain_input_names``)
    the image, the corrupted view values / missing [B, C], and the uncorrupted row
    original_values / original_missing [B, C].
    """

    input_names: ClassVar[tuple[str, ...]] = ("image", "values", "missing")
    pretrain_input_names: ClassVar[tuple[str, ...]] = (
        "image", "values", "missing", "original_values", "original_missing",
    )
    finetune_encoders: ClassVar[tuple[str, ...]] = ("image_encoder", "tabular_encoder", "fusion")
    pretrain_only_modules: ClassVar[tuple[str, ...]] = (
        "image_head", "tabular_head", "itm_head", "categorical_predictor", "continuous_predictor",
    )

    def __init__(
        self,
        table: TableSpec,
        stage: str = "pretrain",
        resnet_depth: int = 50,
        resnet_widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 1,
        embed_dim: int = 512,
        num_layers: int = 4,
        fusion_layers: int = 4,
        num_heads: int = 8,
        projection_dim: int = 128,
        num_classes: int = 3,
        temperature: float = 0.1,
        hard_negatives: str = "sample",
        mask_rate: float = 0.5,
    ) -> None:
        super().__init__()
        if hard_negatives not in HARD_NEGATIVE_MODES:
            raise ValueError(f"hard_negatives must be one of {HARD_NEGATIVE_MODES}, got {hard_negatives!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.masked_columns = round(mask_rate * table.num_columns)
        if not 0 < mask_rate <= 1 or self.masked_columns < 1:
            raise ValueError(f"mask_rate {mask_rate} masks {self.masked_columns} of {table.num_columns} columns; "
                             "it must be in (0, 1] and mask at least one")
        self.stage = check_stage(stage)
        self.config = config_dict(
            stage=stage, resnet_depth=resnet_depth, resnet_widths=[int(w) for w in resnet_widths],
            in_channels=in_channels, embed_dim=embed_dim, num_layers=num_layers, fusion_layers=fusion_layers,
            num_heads=num_heads, projection_dim=projection_dim, num_classes=num_classes, temperature=temperature,
            hard_negatives=hard_negatives, mask_rate=mask_rate,
        )
        self.table = table
        self.temperature = temperature
        self.hard_negatives = hard_negatives
        self.image_encoder = ResNet3D(resnet_depth, resnet_widths, in_channels)
        image_channels = self.image_encoder.out_channels
        self.tabular_encoder = TabularTransformerEncoder(table, embed_dim, num_layers, num_heads)
        self.fusion = CrossAttentionFusion(image_channels=image_channels, dim=embed_dim, num_layers=fusion_layers,
                                           num_heads=num_heads, mlp_ratio=FUSION_MLP_RATIO, use_mask=False)
        if stage == "pretrain":
            self.image_head = ProjectionHead(image_channels, image_channels, projection_dim)
            self.tabular_head = ProjectionHead(embed_dim, embed_dim, projection_dim)
            self.itm_head = itm_head(embed_dim)
            has_categorical, has_continuous = any(table.categorical), not all(table.categorical)
            self.categorical_predictor = nn.Linear(embed_dim, table.num_categories) if has_categorical else None
            self.continuous_predictor = nn.Linear(embed_dim, 1) if has_continuous else None
            cardinalities = torch.tensor(table.cardinalities)
            self.register_buffer("is_categorical", cardinalities > 0, persistent=False)
            self.register_buffer("category_offsets", torch.cumsum(cardinalities, 0) - cardinalities, persistent=False)
        else:
            self.classifier = classifier(embed_dim, num_classes)

    def fused_cls(self, image: torch.Tensor, values: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        """Fused CLS [B, D] of image [B, in_channels, X, Y, Z], values float [B, C] and missing bool [B, C]."""
        tabular = self.tabular_encoder(values, missing)
        return self.fusion(tabular, self.image_encoder(image), None)[:, 0]

    def classify(self, image: torch.Tensor, values: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes] from the fused CLS (fine-tuning stage); shapes as :meth:`fused_cls`."""
        require_stage(self, "finetune", "classify")
        return self.classifier(self.fused_cls(image, values, missing))

    def pretrain_losses(
        self,
        image: torch.Tensor,
        values: torch.Tensor,
        missing: torch.Tensor,
        original_values: torch.Tensor,
        original_missing: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """(ITC + ITM + MTR) / 3 on one batch (pretraining stage).

        Args:
            image: float [B, in_channels, X, Y, Z] (B >= 2: negatives are in-batch).
            values: float [B, C], the corrupted view the ITC and ITM losses see.
            missing: bool [B, C], its missing flags.
            original_values: float [B, C], the uncorrupted row: masked for MTR and its targets.
            original_missing: bool [B, C]; a cell missing here is never scored (it has no value).
            generator: optional RNG for the hard negatives and the reconstruction mask.

        Returns:
            "loss"; the scalars "itc", "itm", "mtr", "mtr_categorical", "mtr_continuous",
            "itm_accuracy"; "itc_logits" [B, B], "itm_logits" [3B, 2], "itm_labels" [3B] (B ones
            then 2B zeros), "reconstruction_mask" bool [B, C] (the masked cells).
        """
        require_stage(self, "pretrain", "pretrain_losses")
        missing, original_missing = missing.bool(), original_missing.bool()
        batch = image.shape[0]
        feature_map = self.image_encoder(image)
        tabular = self.tabular_encoder(values, missing)
        itc, itc_logits = itc_loss(self.image_head(feature_map.mean(dim=(2, 3, 4))), self.tabular_head(tabular[:, 0]),
                                   self.temperature)

        tabular_for_image, image_for_tabular = sample_hard_negatives(itc_logits, self.hard_negatives, generator)
        masked = reconstruction_mask(batch, self.table.num_columns, self.masked_columns, image.device, generator)
        masked_tabular = self.tabular_encoder(original_values, original_missing | masked)
        # One fusion pass over 4B sequences: B positive pairs, B (row, other image), B (other row,
        # image) negatives, then the B masked rows with their own images for reconstruction.
        fused = self.fusion(
            torch.cat([tabular, tabular, tabular[tabular_for_image], masked_tabular.to(tabular.dtype)]),
            torch.cat([feature_map, feature_map[image_for_tabular], feature_map, feature_map]),
            None,
        )
        itm_logits = self.itm_head(fused[: 3 * batch, 0]).float()
        labels = itm_labels(batch, itm_logits.device)
        itm = F.cross_entropy(itm_logits, labels)

        column_tokens = fused[3 * batch:, 1:]  # [B, C, D]
        categorical_logits = None if self.categorical_predictor is None else self.categorical_predictor(column_tokens)
        continuous = None if self.continuous_predictor is None else self.continuous_predictor(column_tokens).squeeze(-1)
        mtr, parts = masked_reconstruction_loss(categorical_logits, continuous, original_values,
                                                masked & ~original_missing, self.is_categorical, self.category_offsets)
        return {
            "loss": (itc + itm + mtr) / 3, "itc": itc, "itm": itm, "mtr": mtr, **parts,
            "itm_accuracy": (itm_logits.argmax(dim=1) == labels).float().mean().detach(),
            "itc_logits": itc_logits, "itm_logits": itm_logits, "itm_labels": labels, "reconstruction_mask": masked,
        }
