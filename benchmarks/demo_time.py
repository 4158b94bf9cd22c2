"""How long the demo takes from a fresh clone: the README's timing figures come from this script.

Clones the repository (its committed HEAD, nothing uncommitted) into an empty folder and runs, there,
the two steps of ``make demo``: its set-up (``make .venv/.installed``, the project environment; the
demo needs no Clinica environment) and then ``make demo`` (the whole demo DAG, set-up already done). For each step it prints wall time and CPU time (user + system of
every process it started). While the DAG runs it samples the Snakemake process itself, whose own CPU
time (scheduling, input checks, benchmark timers; not its jobs) it prints as a share of the run. Then
it sums the rules' own benchmark files (``results/benchmarks/<rule>/...``): jobs, wall and CPU seconds
per rule, and the median wall time of a job.

    .venv/bin/python benchmarks/demo_time.py                       # clone into a temporary folder
    .venv/bin/python benchmarks/demo_time.py --workdir /tmp/demo --keep
    .venv/bin/python benchmarks/demo_time.py --workdir /tmp/demo --paper-only   # then `make demo-paper` there

``--paper`` also times ``make demo-paper`` (the reduced Tables 2-3 and Figures 3-5 on the demo's
cohorts) right after the demo in the same clone; ``--paper-only`` times it in a clone of an earlier
``--keep`` run whose demo has finished (the two steps then need not share one sitting).

Run it on a quiet machine: the demo uses every core, and anything else running slows it.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

REPO = Path(__file__).resolve().parent.parent


def machine() -> str:
    """Date, host, cores, CPU model and memory, for the line the README quotes."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_gib = psutil.virtual_memory().total / 2**30
    return (f"{time.strftime('%Y-%m-%d %H:%M %Z')}  {platform.node()}  nproc={len(os.sched_getaffinity(0))}  "
            f"{cpu}  {memory_gib:.0f} GiB")


class SnakemakeSampler(threading.Thread):
    """Samples, once a second, the CPU time of every Snakemake process at or below ``root``: the
    main one (scheduling, input checks, benchmark timers; not its jobs) and any Snakemake it spawns
    (a local ``run:`` job without ``--force-use-threads`` is a whole new Snakemake). The last sample
    of each process is its total; ``cpu_seconds`` is their sum."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.seconds_by_pid: dict[int, float] = {}
        self.stopped = threading.Event()

    @property
    def cpu_seconds(self) -> float:
        return sum(self.seconds_by_pid.values())

    @staticmethod
    def is_snakemake(process: psutil.Process) -> bool:
        command = process.cmdline()
        return any(part.endswith("/snakemake") or part == "snakemake" for part in command[:3])

    def sample(self) -> None:
        try:
            root = psutil.Process(self.root)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        for process in processes:
            try:
                if self.is_snakemake(process):
                    times = process.cpu_times()
                    self.seconds_by_pid[process.pid] = times.user + times.system
            except psutil.Error:
                continue

    def run(self) -> None:
        while not self.stopped.is_set():
            self.sample()
            self.stopped.wait(1.0)


def timed(command: list[str], cwd: Path, log: Path, sample_snakemake: bool = False) -> tuple[float, float, float]:
    """Run ``command``; returns (wall s, CPU s of every process it started, Snakemake's own CPU s)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(log, "w") as stream:
        process = subprocess.Popen(command, cwd=cwd, stdout=stream, stderr=subprocess.STDOUT)
        sampler = SnakemakeSampler(process.pid)
        if sample_snakemake:
            sampler.start()
        status = process.wait()
        sampler.stopped.set()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit code {status}; its output: {log}")
    return wall, cpu, sampler.cpu_seconds


RULE_HEADER = re.compile(r"^(?:local)?rule (\w+):", re.MULTILINE)
RUN_BLOCK = re.compile(r"^    run:", re.MULTILINE)


def run_block_rules(repository: Path) -> set[str]:
    """Rules of ``repository/rules/*.smk`` with a ``run:`` block. Under ``force-use-threads`` (the
    workflow profile) their jobs are threads of Snakemake, and their benchmark's ``cpu_time`` is the
    Snakemake process's CPU since it started, not the job's."""
    names = set()
    for smk in (repository / "rules").glob("*.smk"):
        # split() gives the text before the first rule, then each rule's name and its body
        pieces = RULE_HEADER.split(smk.read_text())
        names.update(name for name, body in zip(pieces[1::2], pieces[2::2]) if RUN_BLOCK.search(body))
    return names


def rule_sums(benchmarks: Path, since: float = 0.0, threaded_rules: set[str] = frozenset()) -> pd.DataFrame:
    """Per rule: jobs, summed wall and CPU seconds, median wall seconds of a job (from the rules'
    ``benchmark:`` files written after ``since``, a POSIX time), most wall time first. CPU is left
    out (NaN) for ``threaded_rules``, whose jobs' CPU is not told apart from Snakemake's."""
    rows = []
    for path in benchmarks.rglob("*.tsv"):
        if path.stat().st_mtime < since:
            continue
        table = pd.read_csv(path, sep="\t")
        rule = path.relative_to(benchmarks).parts[0]
        for _, record in table.iterrows():
            cpu = float("nan") if rule in threaded_rules else float(record.get("cpu_time", 0.0))
            rows.append({"rule": rule, "wall_s": float(record["s"]), "cpu_s": cpu})
    jobs = pd.DataFrame(rows)
    if jobs.empty:
        return jobs
    summary = jobs.groupby("rule").agg(jobs=("wall_s", "size"), wall_s=("wall_s", "sum"),
                                       cpu_s=("cpu_s", lambda values: values.sum(min_count=1)),
                                       median_wall_s=("wall_s", statistics.median))
    return summary.sort_values("wall_s", ascending=False)


def print_rule_sums(clone: Path, since: float = 0.0) -> None:
    summary = rule_sums(clone / "results" / "benchmarks", since, run_block_rules(clone))
    with pd.option_context("display.width", 120, "display.max_rows", 200, "display.float_format", "{:.1f}".format):
        # Snakemake samples a job's CPU every 0.5 s for its first 15 s, then every 30 s: a job of
        # 15-45 s is seen only up to its 15th second.
        print("\nper rule, from results/benchmarks (seconds; CPU as Snakemake's sampler last saw it, which "
              "misses most of jobs of 15-45 s;\nnone for run: rules, threads of Snakemake counted in its share):")
        print(summary.to_string())


def time_demo_paper(clone: Path, workdir: Path, make: str) -> None:
    """``make demo-paper`` in ``clone`` (whose demo has run): wall, CPU, Snakemake's share, per rule."""
    if not (clone / "results" / "report" / "table1.md").is_file():
        raise SystemExit(f"{clone} has no finished demo (results/report/table1.md); run the demo there first")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True,
                            check=True).stdout.strip()
    print(f"make demo-paper in {clone} (commit {commit}), after its demo")
    started = time.time()
    wall, cpu, snakemake_cpu = timed([make, "demo-paper"], clone, workdir / "demo-paper.log", sample_snakemake=True)
    print(f"make demo-paper: wall {wall / 60:6.1f} min   CPU {cpu / 60:6.1f} min ({cpu / wall:.0%} of one core)")
    print(f"Snakemake's own processes: CPU {snakemake_cpu / 60:.1f} min = {snakemake_cpu / cpu:.1%} of the run's CPU time")
    print_rule_sums(clone, since=started)
    for table in ("table2.md", "table3.md"):
        print(f"\n{table} of this run:\n{(clone / 'results' / 'report' / table).read_text()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="empty folder to clone into (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the clone and its results")
    parser.add_argument("--make", default="make", help="make program (default: make)")
    parser.add_argument("--paper", action="store_true", help="then time `make demo-paper` in the same clone")
    parser.add_argument("--paper-only", action="store_true",
                        help="only time `make demo-paper` in --workdir's clone, whose demo has run")
    args = parser.parse_args()

    if args.paper_only:
        if args.workdir is None:
            raise SystemExit("--paper-only needs the --workdir of a kept demo run")
        print(machine())
        time_demo_paper(args.workdir / "citab", args.workdir, args.make)
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="citab-demo-"))
    clone = workdir / "citab"
    if clone.exists():
        raise SystemExit(f"{clone} exists; give an empty --workdir (the timing is of a fresh clone)")
    workdir.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    print(machine())
    print(f"fresh clone of {REPO} at {commit} in {clone}")

    setup_wall, setup_cpu, _ = timed([args.make, ".venv/.installed"], clone, workdir / "setup.log")
    print(f"set-up:      wall {setup_wall / 60:6.1f} min   CPU {setup_cpu / 60:6.1f} min")
    dag_wall, dag_cpu, snakemake_cpu = timed([args.make, "demo"], clone, workdir / "demo.log", sample_snakemake=True)
    print(f"demo DAG:    wall {dag_wall / 60:6.1f} min   CPU {dag_cpu / 60:6.1f} min "
          f"({dag_cpu / dag_wall:.0%} of one core)")
    cores = len(os.sched_getaffinity(0))
    idle = cores * dag_wall - dag_cpu
    print(f"idle cores:  {idle / 60:.1f} core-min of {cores * dag_wall / 60:.1f} ({idle / (cores * dag_wall):.0%})")
    print(f"make demo (set-up included): wall {(setup_wall + dag_wall) / 60:.1f} min")
    print(f"Snakemake's own processes: CPU {snakemake_cpu / 60:.1f} min = {snakemake_cpu / dag_wall:.0%} of one core "
          f"over the DAG's wall time, {snakemake_cpu / dag_cpu:.1%} of the DAG's CPU time")
    print_rule_sums(clone)
    table1 = clone / "results" / "report" / "table1.md"
    print(f"\nTable 1 of this run ({table1}):\n{table1.read_text()}")
    if args.paper:
        print()
        time_demo_paper(clone, workdir, args.make)
    if not args.keep and args.workdir is None:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    sys.exit(main())
