"""The CITab model: image trunk + SAT tabular encoder + fusion, with pretraining or fine-tuning heads.

Fu et al., "Unleashing the Power of Image-Tabular Self-Supervised Learning via Breaking
Cross-Tabular Barriers", AAAI 2026 (described in docs/model.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from model.fusion import FUSIONS
from model.heads import ProjectionHead, classifier, itm_head
from model.losses import HARD_NEGATIVE_MODES, itc_loss, itm_labels, sample_hard_negatives
from model.resnet3d import ResNet3D
from model.tabular import SATEncoder
from model.weights import LoadReport, PretrainedEncoders, STAGES, check_stage

__all__ = ["CITab", "LoadReport", "STAGES"]



class CITab(PretrainedEncoders, nn.Module):
    """CITab: 3D ResNet + SAT tabular encoder (P-MoLin) + unified fusion, with ITC/ITM or a classifier.

    Args:
        header_bank: float [N, D_h] frozen header vectors (row = column id); D_h sets the header
            adapter's input width.
        stage: "pretrain" (ITC projection heads + ITM head) or "finetune" (classifier only).
        resnet_depth: 10, 18, 34 or 50.
        resnet_widths: the 4 stage widths of the ResNet (paper 64/128/256/512).
        in_channels: image channels.
        embed_dim: token width D of the tabular encoder and the fusion.
        num_layers: tabular transformer layers.
        num_heads: attention heads (tabular encoder and fusion).
        num_experts: P-MoLin experts E per tabular layer.
        use_pmolin: P-MoLin feed-forward in the tabular layers; False = plain MLP (ablation).
        expert_hidden: hidden width of each expert; None = 1.75 * embed_dim (896 for D = 512).
        tabular_mlp_hidden: hidden width of the plain MLP when ``use_pmolin`` is False; None = 4 * D.
        use_header: multiply value tokens by the adapted header vector; False = ablation.
        use_mask: masked attention for padded columns; False = ablation.
        fusion: "unified" (self-attention over tabular + image tokens) or "cross" (ablation).
        fusion_layers: fusion blocks.
        fusion_mlp_ratio: fusion MLP hidden width as a multiple of D.
        projection_dim: ITC projection width.
        image_head_hidden: hidden width of the image projection head; None = trunk channels.
        tabular_head_hidden: hidden width of the tabular projection head; None = embed_dim.
        num_classes: classifier outputs (fine-tuning).
        temperature: ITC temperature (fixed).
        use_itc: train with the ITC loss.
        use_itm: train with the ITM loss.
        hard_negatives: "sample" (official code) or "argmax" (the paper's wording).
    """

    # the batch entries classify() takes, in order (the training loop builds its calls from these)
    input_names: ClassVar[tuple[str, ...]] = ("image", "values", "col_ids", "pad_mask")
    # ... and the entries pretrain_losses() takes (the same ones)
    pretrain_input_names: ClassVar[tuple[str, ...]] = input_names
    # Fine-tuning starts from the three encoders (load_pretrained_encoders, freeze_encoders,
    # encoder_state_dict: model.weights.PretrainedEncoders); the heads never cross stages.
    finetune_encoders: ClassVar[tuple[str, ...]] = ("image_encoder", "tabular_encoder", "fusion")
    pretrain_only_modules: ClassVar[tuple[str, ...]] = ("image_head", "tabular_head", "itm_head")

    def __init__(
        self,
        header_bank: torch.Tensor,
        stage: str = "pretrain",
        resnet_depth: int = 50,
        resnet_widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 1,
        embed_dim: int = 512,
        num_layers: int = 4,
        num_heads: int = 8,
        num_experts: int = 5,
        use_pmolin: bool = True,
        expert_hidden: int | None = None,
        tabular_mlp_hidden: int | None = None,
        use_header: bool = True,
        use_mask: bool = True,
        fusion: str = "unified",
        fusion_layers: int = 4,
        fusion_mlp_ratio: float = 4.0,
        projection_dim: int = 128,
        image_head_hidden: int | None = None,
        tabular_head_hidden: int | None = None,
        num_classes: int = 3,
        temperature: float = 0.1,
        use_itc: bool = True,
        use_itm: bool = True,
        hard_negatives: str = "sample",
    ) -> None:
        super().__init__()
        check_stage(stage)
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {sorted(FUSIONS)}, got {fusion!r}")
        if hard_negatives not in HARD_NEGATIVE_MODES:
            raise ValueError(f"hard_negatives must be one of {HARD_NEGATIVE_MODES}, got {hard_negatives!r}")
        if not (use_itc or use_itm):
            raise ValueError("at least one of use_itc and use_itm must be true")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        # Constructor arguments (without the bank), so a checkpoint can say how to rebuild the model.
        self.config = {
            "stage": stage, "resnet_depth": resnet_depth, "resnet_widths": [int(w) for w in resnet_widths],
            "in_channels": in_channels, "embed_dim": embed_dim, "num_layers": num_layers, "num_heads": num_heads,
            "num_experts": num_experts, "use_pmolin": use_pmolin, "expert_hidden": expert_hidden,
            "tabular_mlp_hidden": tabular_mlp_hidden, "use_header": use_header, "use_mask": use_mask,
            "fusion": fusion, "fusion_layers": fusion_layers, "fusion_mlp_ratio": fusion_mlp_ratio,
            "projection_dim": projection_dim, "image_head_hidden": image_head_hidden,
            "tabular_head_hidden": tabular_head_hidden, "num_classes": num_classes, "temperature": temperature,
            "use_itc": use_itc, "use_itm": use_itm, "hard_negatives": hard_negatives,
        }
        self.stage = stage
        self.temperature = temperature
        self.use_itc = use_itc
        self.use_itm = use_itm
        self.hard_negatives = hard_negatives

        self.image_encoder = ResNet3D(resnet_depth, resnet_widths, in_channels)
        image_channels = self.image_encoder.out_channels
        ffn_hidden = (expert_hidden or int(1.75 * embed_dim)) if use_pmolin else (tabular_mlp_hidden or 4 * embed_dim)
        self.tabular_encoder = SATEncoder(
            header_bank, dim=embed_dim, num_layers=num_layers, num_heads=num_heads,
            num_experts=num_experts if use_pmolin else None, hidden=ffn_hidden,
            use_header=use_header, use_mask=use_mask,
        )
        self.fusion = FUSIONS[fusion](
            image_channels=image_channels, dim=embed_dim, num_layers=fusion_layers, num_heads=num_heads,
            mlp_ratio=fusion_mlp_ratio, use_mask=use_mask,
        )
        if stage == "pretrain":
            self.image_head = ProjectionHead(image_channels, image_head_hidden or image_channels, projection_dim)
            self.tabular_head = ProjectionHead(embed_dim, tabular_head_hidden or embed_dim, projection_dim)
            self.itm_head = itm_head(embed_dim)
        else:
            self.classifier = classifier(embed_dim, num_classes)

    # --- forward pieces ------------------------------------------------------------------------

    def _encode(
        self, image: torch.Tensor, values: torch.Tensor, col_ids: torch.Tensor, pad_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """ResNet map [B, C_img, x, y, z], tabular tokens [B, C+1, D] and P-MoLin routing weights."""
        feature_map = self.image_encoder(image)
        tabular, routing = self.tabular_encoder(values, col_ids, pad_mask)
        return feature_map, tabular, routing

    def fused_cls(
        self, image: torch.Tensor, values: torch.Tensor, col_ids: torch.Tensor, pad_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Fused CLS [B, D] of image [B, 1, X, Y, Z] and rows (values / col_ids / pad_mask [B, C])."""
        feature_map, tabular, _ = self._encode(image, values, col_ids, pad_mask)
        return self.fusion(tabular, feature_map, pad_mask)[:, 0]

    def classify(
        self,
        image: torch.Tensor,
        values: torch.Tensor,
        col_ids: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        return_routing: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Class logits from the fused CLS (fine-tuning stage).

        Args:
            image: float [B, 1, X, Y, Z].
            values: float [B, C].
            col_ids: long [B, C].
            pad_mask: bool [B, C], True = padded; None for unpadded single-cohort rows.
            return_routing: also return the P-MoLin routing weights.

        Returns:
            logits [B, num_classes], or (logits, routing) with routing a list over tabular layers of
            [B, C+1, E] softmax weights (empty list without P-MoLin).
        """
        if self.stage != "finetune":
            raise RuntimeError("classify() needs a model built with stage='finetune' (it has the classifier)")
        feature_map, tabular, routing = self._encode(image, values, col_ids, pad_mask)
        logits = self.classifier(self.fusion(tabular, feature_map, pad_mask)[:, 0])
        return (logits, routing) if return_routing else logits

    def pretrain_losses(
        self,
        image: torch.Tensor,
        values: torch.Tensor,
        col_ids: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """ITC + ITM pretraining objective on one batch (docs/model.md 5.2-5.4).

        Args:
            image: float [B, 1, X, Y, Z] (B >= 2: negatives are in-batch).
            values: float [B, C].
            col_ids: long [B, C].
            pad_mask: bool [B, C], True = padded; None when nothing is padded.
            generator: optional RNG for hard-negative sampling.

        Returns:
            "loss": the scalar to backpropagate ((itc + itm) / 2, or the one loss a w/o-ITC /
            w/o-ITM variant trains); "itc" (always, the ITM negatives are drawn from its logits;
            without gradient when ITC is not trained); "itc_logits" [B, B]; and when ITM is
            trained: "itm" scalar, "itm_logits" [3B, 2], "itm_labels" [3B] (B ones, 2B zeros),
            "itm_accuracy" scalar.
        """
        if self.stage != "pretrain":
            raise RuntimeError("pretrain_losses() needs a model built with stage='pretrain' (it has the ITC/ITM heads)")
        feature_map, tabular, _ = self._encode(image, values, col_ids, pad_mask)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.use_itc):
            image_z = self.image_head(feature_map.mean(dim=(2, 3, 4)))
            tabular_z = self.tabular_head(tabular[:, 0])
            itc, itc_logits = itc_loss(image_z, tabular_z, self.temperature)
        out = {"itc": itc, "itc_logits": itc_logits}
        losses = [itc] if self.use_itc else []
        if self.use_itm:
            batch = image.shape[0]
            tabular_for_image, image_for_tabular = sample_hard_negatives(itc_logits, self.hard_negatives, generator)
            # One fusion pass over 3B pairs: B positives, then (own row, other image) and (other
            # row with its own pad mask, own image).
            fused_tabular = torch.cat([tabular, tabular, tabular[tabular_for_image]])
            fused_maps = torch.cat([feature_map, feature_map[image_for_tabular], feature_map])
            fused_pad = None if pad_mask is None else torch.cat([pad_mask, pad_mask, pad_mask[tabular_for_image]])
            itm_logits = self.itm_head(self.fusion(fused_tabular, fused_maps, fused_pad)[:, 0]).float()
            labels = itm_labels(batch, itm_logits.device)
            itm = F.cross_entropy(itm_logits, labels)
            losses.append(itm)
            out.update(
                itm=itm, itm_logits=itm_logits, itm_labels=labels,
                itm_accuracy=(itm_logits.argmax(dim=1) == labels).float().mean().detach(),
            )
        out["loss"] = torch.stack(losses).mean()
        return out
