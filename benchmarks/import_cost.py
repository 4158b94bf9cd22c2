"""What each per-image job pays before it computes: the CPU time of a fresh interpreter importing what
the job's code imports, side by side with the whole ``import ants`` it used before.

Every variant runs ``--repeats`` times in a fresh ``python -c``, interleaved (so a busy machine slows
each alike); the median CPU seconds (user + system) are printed. Nothing is asserted.

    .venv/bin/python benchmarks/import_cost.py --repeats 5
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# What each job's code imports before its first computation (the workflow functions import the rest
# lazily, inside the step).
VARIANTS = {
    "bare interpreter": "pass",
    "N4 / registration: import ants (whole package)": "import workflow.preprocess; import ants",
    "N4 / registration: workflow.preprocess.import_ants()": "import workflow.preprocess as p; p.import_ants()",
    "input check, model-ready: workflow.preprocess + nibabel": "import workflow.preprocess; import nibabel",
    "skull strip: torch + deepbet": "import workflow.skullstrip; import torch; import deepbet",
    "image QC: workflow.preprocess_qc + nibabel + matplotlib": (
        "import workflow.preprocess_qc; import nibabel; import matplotlib; matplotlib.use('Agg'); "
        "import matplotlib.pyplot"),
}


def cpu_seconds(code: str) -> tuple[float, float]:
    """(CPU s, wall s) of one fresh interpreter running ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, code in VARIANTS.items():
            samples[name].append(cpu_seconds(code))
    print(f"median of {args.repeats} fresh interpreters each (CPU = user + system seconds)")
    for name, runs in samples.items():
        cpu = statistics.median(run[0] for run in runs)
        wall = statistics.median(run[1] for run in runs)
        print(f"  {name:58s} CPU {cpu:5.2f} s   wall {wall:5.2f} s")


if __name__ == "__main__":
    main()
