"""The self-supervised comparison models of CITab's Table 1, pretrained and fine-tuned per cohort.

One module per method (docs/baselines.md 8-10): :class:`MMCL` (contrastive, image-only fine-tuning),
:class:`TIP` (contrastive + matching + masked reconstruction, fused fine-tuning) and :class:`ViTa`
(contrastive with a tabular ViT; this project's version). Each is one class with two stages, like
CITab: ``stage="pretrain"`` has ``pretrain_losses(*inputs) -> {"loss", ...}`` (inputs named by
``pretrain_input_names``), ``stage="finetune"`` has ``classify(*inputs) -> logits`` (inputs named
by ``input_names``) and ``load_pretrained_encoders(state_dict)``. They are bound to one cohort's
:class:`model.table_spec.TableSpec`, so they cannot pretrain across tables; build them by variant
name through :func:`model.registry.build_model`.
"""

from __future__ import annotations

from model.ssl_baselines.mmcl import MMCL
from model.ssl_baselines.tip import TIP
from model.ssl_baselines.vita import ViTa

__all__ = ["MMCL", "TIP", "ViTa"]
