"""How much CPU the Snakemake process itself spends on short jobs, with and without ``benchmark:``,
with each scheduling setting (``--scheduling``), and for ``run:`` jobs spawned as processes or run
in threads (``--run-jobs``).

A throw-away workflow of ``--jobs`` jobs, each a fresh Python that maps ``--mb`` MB and sleeps
``--seconds`` (about the life of one per-image preprocessing job), runs twice with ``--cores 2``:
once with a ``benchmark:`` file per job, once without. Printed: the Snakemake process's own CPU
seconds (user + system, sampled from /proc until it exits), per job. Snakemake's benchmark sampler
reads /proc/<pid>/smaps_rollup of every process of a running job twice a second during the job's
first 15 s (``snakemake.benchmark.BENCHMARK_INTERVAL_SHORT``), charged to the Snakemake process; this
says what that costs beside Snakemake's other work per job. Nothing is asserted.

    .venv/bin/python benchmarks/snakemake_overhead.py --jobs 12 --seconds 8 --mb 500
    .venv/bin/python benchmarks/snakemake_overhead.py --scheduling --jobs 40 --seconds 5 --mb 50
    .venv/bin/python benchmarks/snakemake_overhead.py --run-jobs --jobs 10

``--scheduling`` runs the workflow (with ``benchmark:``) under Snakemake's defaults (the ILP
scheduler, whose solver runs whenever more jobs are ready than cores are free; a scheduling round
every second from the job rate limiter, 100/1s) and under the settings of this project's workflow
profile (profiles/default/config.yaml): with many jobs waiting, as the demo's training has, the
rounds are most of Snakemake's own CPU.

``--run-jobs`` runs a workflow of ``--jobs`` local rules with a ``run:`` block that writes one small
file (as the settings rules do), once as Snakemake runs them locally by default (each job a new
Snakemake process, which parses the Snakefile and imports every executor plugin) and once with
``--force-use-threads`` (each job a thread of the running Snakemake, as on a cluster, and as the
workflow profile sets). Here the wall time is the figure: where the SLURM client is installed but no
controller answers, each spawned Snakemake waits about 9 s on the SLURM plugin's
``scontrol show config``.
"""

from __future__ import annotations

import argparse
import resource
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

RUN_SNAKEFILE = """
localrules: all, job

rule all:
    input: expand("done/{{i}}.txt", i=range({jobs}))

rule job:
    output: "done/{{i}}.txt"
    {benchmark}
    run:
        with open(output[0], "w") as stream:
            stream.write(wildcards.i)
"""


def snakemake_cpu(workdir: Path, with_benchmark: bool, jobs: int, seconds: float, mb: int,
                  extra_args: tuple[str, ...] = (), snakefile: str = SNAKEFILE) -> tuple[float, float, float]:
    """(Snakemake's own CPU s, CPU s of everything the run started, wall s) of one run of the
    throw-away workflow in ``workdir``, with ``extra_args`` on Snakemake's command line. The jobs
    are the same in every run, so differences in the total are Snakemake's too (the ILP
    scheduler's solver runs as a child process, outside Snakemake's own CPU time)."""
    workdir.mkdir(parents=True)
    benchmark = 'benchmark: "benchmarks/{i}.tsv"' if with_benchmark else ""
    (workdir / "Snakefile").write_text(textwrap.dedent(snakefile.format(
        jobs=jobs, benchmark=benchmark, python=sys.executable, mb=mb, seconds=seconds)))
    started = time.perf_counter()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", "--quiet", *extra_args, "all"], cwd=workdir,
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
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = (children.ru_utime - children_before.ru_utime) + (children.ru_stime - children_before.ru_stime)
    return last[0], total, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--mb", type=int, default=500, help="memory each job maps and touches (MB)")
    parser.add_argument("--scheduling", action="store_true",
                        help="compare Snakemake's default scheduling with the workflow profile's")
    parser.add_argument("--run-jobs", action="store_true",
                        help="compare run: jobs spawned as Snakemake processes with run: jobs in threads")
    args = parser.parse_args()
    snakefile = SNAKEFILE
    if args.run_jobs:
        snakefile = RUN_SNAKEFILE
        variants = [("run: jobs spawned", True, ()), ("run: jobs in threads", True, ("--force-use-threads",))]
    elif args.scheduling:
        variants = [("defaults (ilp, 100/1s)", True, ()), *((f"profile ({label})", True, extra) for label, extra in
                                                             profile_scheduling())]
    else:
        variants = [("with benchmark:", True, ()), ("without benchmark:", False, ())]
    with tempfile.TemporaryDirectory(prefix="smk-overhead-") as scratch:
        for index, (label, with_benchmark, extra) in enumerate(variants):
            cpu, total, wall = snakemake_cpu(Path(scratch) / str(index), with_benchmark, args.jobs, args.seconds,
                                             args.mb, extra, snakefile)
            print(f"{label:28s} Snakemake's own CPU {cpu:6.1f} s ({cpu / args.jobs:.2f} s per job), "
                  f"run's CPU {total:6.1f} s, wall {wall:5.1f} s", flush=True)


def profile_scheduling() -> list[tuple[str, tuple[str, ...]]]:
    """The scheduling keys of profiles/default/config.yaml as command-line arguments."""
    import yaml

    profile = yaml.safe_load((Path(__file__).resolve().parent.parent / "profiles" / "default" / "config.yaml").read_text())
    keys = ("scheduler", "max-jobs-per-timespan")
    arguments = tuple(item for key in keys if key in profile for item in (f"--{key}", str(profile[key])))
    return [(", ".join(f"{key} {profile[key]}" for key in keys if key in profile), arguments)]

if __name__ == "__main__":
    main()
