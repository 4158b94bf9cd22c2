"""Small training-stage inputs written directly (tables, columns, volumes, header bank).

The training tests use them so they do not wait for the upstream stages: three cohorts with 5, 3
and 4 columns (different column sets sharing some headers; "Sex" categorical; the last column
missing in every fourth row), a few subjects each, 16^3 volumes whose bright blob and first column
both carry the label, and a random header bank.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from model.header_bank import save_header_bank
from workflow import paths

ENCODER = "minilm"
COHORT_COLUMNS = {
    "ADNI": ["Age", "Sex", "MMSE", "ADAS13", "APOE4"],
    "AIBL": ["Age", "Sex", "MMSE"],
    "NACC": ["Age", "Sex", "MoCA", "CDR sum of boxes"],
}
SPLIT_SIZES = {"train": 9, "val": 3, "test": 6}
VOLUME_SHAPE = (16, 16, 16)


def write_training_inputs(workdir: Path, seed: int = 0, header_dim: int = 16, encoder: str = ENCODER) -> None:
    """Write tables, split files, columns.yaml, model-ready volumes and the header bank under ``workdir``."""
    rng = np.random.default_rng(seed)
    headers = sorted({h for columns in COHORT_COLUMNS.values() for h in columns})
    bank_path = workdir / paths.HEADER_BANK.format(encoder=encoder)
    save_header_bank(bank_path, torch.from_numpy(rng.normal(size=(len(headers), header_dim)).astype(np.float32)),
                     headers, encoder=encoder, encoder_sha256="0" * 64, pooling="mean", max_length=32)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in VOLUME_SHAPE], indexing="ij"))
    for cohort, column_headers in COHORT_COLUMNS.items():
        names = [h.lower().replace(" ", "_") for h in column_headers]
        records = []
        subject = 0
        for split, size in SPLIT_SIZES.items():
            for row in range(size):
                label = row % 3
                subject += 1
                session = "M000"
                volume = paths.MODEL_READY_VOLUME.format(cohort=cohort, subject=f"S{subject:03d}", session=session)
                blob = np.exp(-((grid ** 2).sum(0)) / (0.1 + 0.15 * label))
                image = (blob + 0.1 * rng.random(VOLUME_SHAPE)).astype(np.float32)
                (workdir / volume).parent.mkdir(parents=True, exist_ok=True)
                np.save(workdir / volume, image)
                values = rng.normal(size=len(names))
                values[0] = label - 1 + 0.3 * rng.normal()
                values[1] = rng.integers(2)  # "Sex", a categorical code
                missing = np.zeros(len(names), dtype=bool)
                missing[-1] = row % 4 == 3  # some missing cells (written as 0, flagged), as the tables stage does
                values[missing] = 0.0
                record = {"cohort": cohort, "subject": f"S{subject:03d}", "session": session, "source_id": str(subject),
                          "volume": volume, "split": split, "label": label, "label_name": ["CN", "MCI", "DE"][label],
                          "visit_code": "bl", "visit_date": "2020-01-01", "delta_days": 0}
                for name, value, absent in zip(names, values, missing):
                    record[name] = round(float(value), 5)
                    record[f"missing__{name}"] = int(absent)
                records.append(record)
        table_path = workdir / paths.TABLE.format(cohort=cohort)
        table_path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame.from_records(records).to_csv(table_path, sep="\t", index=False)
        # the split file the tables stage writes beside the table (fine-tuning records it)
        pd.DataFrame.from_records(records)[["subject", "split"]].to_csv(
            workdir / paths.TABLE_SPLIT.format(cohort=cohort), sep="\t", index=False)
        columns = [{"name": n, "header": h, "type": "continuous"} for n, h in zip(names, column_headers)]
        columns[1] = {**columns[1], "type": "categorical", "levels": {"Male": 0, "Female": 1}}
        (workdir / paths.TABLE_COLUMNS.format(cohort=cohort)).write_text(yaml.safe_dump({"columns": columns}))
