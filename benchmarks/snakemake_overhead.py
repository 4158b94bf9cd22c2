"""How much CPU the Snakemake process itself spends on short jobs, with and without ``benchmark:``.

A throw-away workflow of ``--jobs`` jobs, each a fresh Python that maps ``--mb`` MB and sleeps
``--seconds`` (about the life of one per-image preprocessing job), runs twice with ``--cores 2``:
once with a ``benchmark:`` file per job, once without. Printed: the Snakemake process's own CPU
seconds (user + system, sampled from /proc until it exits), per job. Snakemake's benchmark sampler
reads /proc/<pid>/smaps_rollup of every process of a running job twice a second during the job's
first 15 s (``snakemake.benchmark.BENCHMARK_INTERVAL_SHORT``), charged to the Snakemake process; this
says what that costs beside Snakemake's other work per job. Nothing is asserted.

    .venv/bin/python benchmarks/snakemake_overhead.py --jobs 12 --seconds 8 --mb 500
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil

SNAKEFILE = """
rule all:
    input: expand("done/{{i}}.txt", i=range({jobs}))

rule job:
    output: "done/{{i}}.txt"
    {benchmark}
    shell: "{python} -c 'import numpy as np, time; a = np.ones({mb} * 2**17); time.sleep({seconds})' && touch {{output}}"
"""


def snakemake_cpu(workdir: Path, with_benchmark: bool, jobs: int, seconds: float, mb: int) -> tuple[float, float]:
    """(Snakemake's own CPU s, wall s) of one run of the throw-away workflow in ``workdir``."""
    workdir.mkdir(parents=True)
    benchmark = 'benchmark: "benchmarks/{i}.tsv"' if with_benchmark else ""
    (workdir / "Snakefile").write_text(textwrap.dedent(SNAKEFILE.format(
        jobs=jobs, benchmark=benchmark, python=sys.executable, mb=mb, seconds=seconds)))
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", "--quiet", "all"], cwd=workdir,
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    own = psutil.Process(process.pid)
    last = [0.0]

    def sample() -> None:
        while process.poll() is None:
            try:
                times = own.cpu_times()
                last[0] = times.user + times.system
            except psutil.Error:
                return
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if process.wait() != 0:
        raise SystemExit(f"snakemake failed in {workdir}")
    sampler.join()
    return last[0], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--mb", type=int, default=500, help="memory each job maps and touches (MB)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smk-overhead-") as scratch:
        for label, with_benchmark in (("with benchmark:", True), ("without benchmark:", False)):
            cpu, wall = snakemake_cpu(Path(scratch) / label.split()[0], with_benchmark, args.jobs, args.seconds, args.mb)
            print(f"{label:20s} Snakemake's own CPU {cpu:6.1f} s ({cpu / args.jobs:.2f} s per job), wall {wall:5.1f} s")


if __name__ == "__main__":
    main()
