"""Small helpers shared by the supervised baselines."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["config_dict", "kaiming_linear_init"]


def config_dict(**arguments: Any) -> dict[str, Any]:
    """Constructor arguments as a JSON-serialisable dict (tuples become lists)."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in arguments.items()}


def kaiming_linear_init(module: nn.Module) -> None:
    """Every Linear inside ``module``: Kaiming-normal weights (fan_in, ReLU gain), zero bias."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.kaiming_normal_(sub.weight, mode="fan_in", nonlinearity="relu")
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
