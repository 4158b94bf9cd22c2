"""The NACC reader benchmark (benchmarks/nacc_reader.py) still runs, at a small size."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_nacc_reader_benchmark_runs_small(tmp_path):
    process = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "nacc_reader.py"), "--rows", "2000", "--columns", "300",
         "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(process.stdout.split("result: ", 1)[1])
    assert (result["rows"], result["columns"], result["visits"]) == (2000, 300, 2000)
    # every generated cell is valid: no bad cells, and every MRI row found its NIfTI
    assert result["cell_qc"] == 0 and result["images"] > 0
    assert 0 < result["peak_rss_mib"] < 2048 and result["wall_s"] >= 0
    header = (tmp_path / "clinical" / "investigator_ftldlbd_nacc66.csv").open().readline().rstrip("\n").split(",")
    assert len(header) == 300 and header[:2] == ["NACCID", "NACCVNUM"]
