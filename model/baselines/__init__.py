"""The supervised comparison models of CITab's Table 1, trained from scratch per cohort.

One module per method (docs/baselines.md): image only (:class:`ImageResNet`), tabular only
(:class:`TabularTransformer`), and the fusion models :class:`ConcatFusion`, :class:`DAFT`,
:class:`CrossAttentionFusion` (this project's design) and :class:`HyperFusion`. Every model is
built for one cohort's :class:`model.table_spec.TableSpec` and exposes ``input_names``,
``classify(*inputs) -> logits``, ``config`` and ``stage = "finetune"``; build them by variant
name through :func:`model.registry.build_model`.
"""

from __future__ import annotations

from model.baselines.concat import ConcatFusion
from model.baselines.cross_attention import CrossAttentionFusion
from model.baselines.daft import DAFT
from model.baselines.hyperfusion import HyperFusion
from model.baselines.resnet50 import ImageResNet
from model.baselines.transformer import TabularTransformer

__all__ = ["ConcatFusion", "CrossAttentionFusion", "DAFT", "HyperFusion", "ImageResNet", "TabularTransformer"]
