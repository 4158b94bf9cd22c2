"""The shape of one cohort's table, as the supervised baselines need it.

CITab reads columns through header vectors and so works on any table; the comparison models are
bound to one fixed column order (docs/baselines.md 0): they are built for a :class:`TableSpec`
and trained per cohort.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["TableSpec"]


@dataclass(frozen=True)
class TableSpec:
    """Ordered columns of one cohort's table.

    Attributes:
        column_names: column identifiers in table order (the order of ``values[:, j]``).
        cardinalities: per column, 0 for a continuous column, or K > 0 for a categorical column
            whose cells hold integer codes 0 .. K-1.
    """

    column_names: tuple[str, ...]
    cardinalities: tuple[int, ...]

    def __post_init__(self) -> None:
        # accept lists (e.g. from a JSON checkpoint) but store tuples, so the spec stays hashable
        object.__setattr__(self, "column_names", tuple(str(name) for name in self.column_names))
        object.__setattr__(self, "cardinalities", tuple(int(k) for k in self.cardinalities))
        if len(self.column_names) != len(self.cardinalities):
            raise ValueError(
                f"TableSpec: {len(self.column_names)} column names but {len(self.cardinalities)} cardinalities"
            )
        if not self.column_names:
            raise ValueError("TableSpec: a table needs at least one column")
        if len(set(self.column_names)) != len(self.column_names):
            raise ValueError(f"TableSpec: column names must be distinct, got {list(self.column_names)}")
        if any(k < 0 for k in self.cardinalities):
            raise ValueError(f"TableSpec: cardinalities must be >= 0 (0 = continuous), got {list(self.cardinalities)}")

    @property
    def num_columns(self) -> int:
        """C, the number of columns."""
        return len(self.column_names)

    @property
    def num_categories(self) -> int:
        """Sum of the categorical cardinalities (rows of a shared categorical embedding table)."""
        return sum(self.cardinalities)

    @property
    def categorical(self) -> tuple[bool, ...]:
        """Per column, True when it is categorical."""
        return tuple(k > 0 for k in self.cardinalities)

    def to_dict(self) -> dict[str, list]:
        """JSON-serialisable form; ``TableSpec(**spec.to_dict())`` rebuilds it."""
        return {"column_names": list(self.column_names), "cardinalities": list(self.cardinalities)}

    @classmethod
    def from_columns(cls, columns: Sequence[Mapping[str, Any]]) -> TableSpec:
        """Build from a cohort's column entries (config/columns.yaml, raw or as workflow/columns.py loads them).

        Args:
            columns: ordered entries with ``name``, ``type`` (continuous | categorical) and, for a
                categorical column, ``levels``: a mapping level name -> integer code, or a list
                (code = position). The cardinality is the largest code + 1, so unused codes in
                between still get an embedding row.
        """
        names, cardinalities = [], []
        for column in columns:
            name, kind = column["name"], column["type"]
            if kind == "continuous":
                cardinalities.append(0)
            elif kind == "categorical":
                levels = column.get("levels")
                codes = list(levels.values()) if isinstance(levels, Mapping) else list(range(len(levels or [])))
                if not codes or any(not isinstance(code, int) or code < 0 for code in codes):
                    raise ValueError(
                        f"column {name!r}: categorical levels need non-negative integer codes, got {levels!r}"
                    )
                cardinalities.append(max(codes) + 1)
            else:
                raise ValueError(f"column {name!r}: type must be continuous or categorical, got {kind!r}")
            names.append(name)
        return cls(tuple(names), tuple(cardinalities))
