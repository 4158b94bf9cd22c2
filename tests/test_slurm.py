"""A real part of the DAG through `--profile profiles/slurm` on a real (single-node) SLURM.

Start the cluster first (as root): `bash .ci/slurm-up.sh` (two fake GPUs); stop it with
`bash .ci/slurm-down.sh`. The SLURM tests skip when `sinfo` shows no idle node.

Starting from a copy of the shared tiny run (fixture ``tiny_full_run``):

1. preprocessing: the input checks of a cohort (one batch job, one CPU: they run in series) and the
   whole per-image chain (N4 to QC) of one batch of images, remade with ``--forcerun``, go through
   SLURM as the profile groups them: the check job and one job for the batch's four steps. Its
   model-ready step asks for ``gpu=1``, which the profile turns into ``sbatch --gpus=1``;
2. the pretraining job goes through SLURM holding SLURM's ``gres=gpu:2`` and running DDP with two
   gloo processes on CPU (torch here has no CUDA, so the job asks torch for 0 GPUs while SLURM
   binds two); its log records the CUDA_VISIBLE_DEVICES that SLURM set;
3. the same pretraining runs locally in another copy; both must give the same weights, and the
   remade volume and verdicts must equal those of the local tiny run (registration is seeded).

Budget: about 2 minutes after the shared run (each SLURM job costs ~20-40 s of submission and
status polling on 2 cores).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from conftest import REPO, VENV_ON_PATH, run_snakemake, tiny_config_with
from workflow import paths
from workflow.preprocess import CHECK_BATCH

PROFILE = REPO / "profiles" / "slurm"
# Two gloo processes on the node's two CPUs; the job holds both fake GPUs but torch runs on CPU.
DDP_ON_CPU = {"pretrain": {"cpu_processes": 2, "threads": 2}}
# Fast status polling for a test cluster whose MinJobAge (600 s) covers it.
FAST_POLLING = "--slurm-init-seconds-before-status-checks=2"
SUBMITTED = re.compile(r"Job \S+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def idle_slurm_node() -> str | None:
    """Why the SLURM tests cannot run here, or ``None`` when a node is idle."""
    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo) on PATH; start a test cluster with: bash .ci/slurm-up.sh"
    states = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=30)
    if states.returncode != 0 or "idle" not in states.stdout.split():
        reason = states.stderr.strip() or f"node states: {states.stdout.split()}"
        return f"no idle SLURM node ({reason}); start a test cluster with: bash .ci/slurm-up.sh"
    return None


needs_slurm = pytest.mark.skipif(idle_slurm_node() is not None, reason=str(idle_slurm_node()))


def submitted_jobs(output: str) -> dict[str, list[int]]:
    """SLURM job ids per rule (or per group, for a group job), from Snakemake's "submitted with SLURM
    jobid" lines."""
    groups = set(profile_groups()[1])
    jobs: dict[str, list[int]] = {}
    for job_id, log in SUBMITTED.findall(output):
        rule = re.search(r"/rule_(\w+?)/", log)
        # a group job's log folder is group_<group>_<its rules>
        group = next((g for g in groups if f"/group_{g}_" in log), None)
        jobs.setdefault(rule[1] if rule else group or log, []).append(int(job_id))
    return jobs


def slurm_job(job_id: int) -> dict[str, str]:
    """`scontrol show job` as key=value pairs (finished jobs stay visible for MinJobAge)."""
    shown = subprocess.run(["scontrol", "show", "job", str(job_id)], capture_output=True, text=True, timeout=30, check=True)
    return dict(re.findall(r"(\w+)=(\S*)", shown.stdout))


def copy_run(source: Path, destination: Path) -> Path:
    """A copy of a finished run, mtimes and Snakemake metadata included, so it is up to date too."""
    shutil.copytree(source, destination, symlinks=True)
    return destination


def with_profile_set_resources(*extra: str) -> list[str]:
    """``--set-resources`` with the profile's entries and ``extra``: a --set-resources on the command
    line replaces the profile's whole list (Snakemake merges per option, not per rule)."""
    entries = yaml.safe_load((PROFILE / "config.yaml").read_text())["set-resources"]
    return ["--set-resources", *[f"{rule}:{key}={value}" for rule, settings in entries.items()
                                 for key, value in settings.items()], *extra]


def profile_rule_names() -> set[str]:
    return set(yaml.safe_load((PROFILE / "config.yaml").read_text())["set-resources"])


def test_profile_names_real_rules(snakemake_workdir: Path) -> None:
    """set-resources for a misspelt rule would be ignored silently, so check the names."""
    listed = run_snakemake(snakemake_workdir, "--list-rules").stdout.split()
    assert profile_rule_names() <= set(listed), profile_rule_names() - set(listed)


@pytest.fixture(scope="module")
def slurm_run(tiny_full_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the two SLURM steps and the local comparison; return what the tests check."""
    from workflow.preprocess_batch import DONE, read_outcomes

    base = tmp_path_factory.mktemp("slurm")
    ddp_config = tiny_config_with(DDP_ON_CPU, base)
    on_slurm = copy_run(tiny_full_run, base / "on_slurm")
    # the cohort's smallest preprocessing batch (the fewest images to remake)
    model_ready = min((str(folder.relative_to(on_slurm)) for folder in on_slurm.glob(
        paths.PREPROCESS_BATCH.format(cohort="ADNI", step="model_ready", batch="*"))),
        key=lambda folder: (len(read_outcomes(on_slurm / folder)), folder))
    volumes = [o.files["volume"] for o in read_outcomes(on_slurm / model_ready) if o.status == DONE]
    assert len(volumes) >= 2, volumes
    weights_files = sorted(on_slurm.glob(paths.PRETRAINED_WEIGHTS.format(variant="*")))
    assert weights_files, "the tiny run made no pretrained weights"
    weights = str(weights_files[0].relative_to(on_slurm))
    variant = weights_files[0].parent.name
    slurm_args = ("--profile", str(PROFILE), FAST_POLLING, "--jobs=2")

    # --forcerun: the process count is a param, but the point here is where the job runs
    pretraining = run_snakemake(
        on_slurm, weights, "--forcerun=pretrain", *slurm_args, "--set-resources=pretrain:gres=gpu:2",
        configfiles=(ddp_config,), env=VENV_ON_PATH, timeout=600,
    )
    # Then (so that the pretraining above saw the tiny run's files unchanged) the input checks of the
    # cohort's images (one batch) and the whole chain (N4 to QC) of its smallest batch of images,
    # remade; its model-ready step asks for a GPU.
    preprocessing = run_snakemake(
        on_slurm, CHECK_BATCH.format(cohort="ADNI", batch="0000"), model_ready,
        "--forcerun", "preprocess_check", "preprocess_n4", *slurm_args,
        *with_profile_set_resources("preprocess_model_ready:gpu=1"), env=VENV_ON_PATH, timeout=600,
    )
    local = copy_run(tiny_full_run, base / "local")
    run_snakemake(local, weights, "--forcerun=pretrain", "--cores=2", configfiles=(ddp_config,), env=VENV_ON_PATH, timeout=600)
    return {
        "local_tiny_run": tiny_full_run, "on_slurm": on_slurm, "local": local, "volumes": volumes,
        "weights": weights, "variant": variant,
        "preprocessing_output": preprocessing.stdout,
        "preprocessing": submitted_jobs(preprocessing.stdout), "pretraining": submitted_jobs(pretraining.stdout),
        "pretraining_output": pretraining.stdout,
    }


@needs_slurm
@pytest.mark.slurm
@pytest.mark.slow
def test_preprocessing_job_went_through_slurm_with_one_gpu(slurm_run: dict) -> None:
    # the model-ready step runs in its batch's group job (profiles/slurm groups the per-image rules)
    (job_id,) = slurm_run["preprocessing"]["preprocess_batch"]
    job = slurm_job(job_id)
    assert job["JobState"] == "COMPLETED", job
    assert "gpu:1" in job.get("TresPerJob", "") + job.get("TresPerNode", ""), job
    slurm_log = next(slurm_run["on_slurm"].glob(f"results/logs/slurm/group_preprocess_batch_*/**/{job_id}.log"))
    assert "Finished jobid" in slurm_log.read_text()
    for volume in slurm_run["volumes"]:
        remade = (slurm_run["on_slurm"] / volume).read_bytes()
        assert remade == (slurm_run["local_tiny_run"] / volume).read_bytes(), volume


@needs_slurm
@pytest.mark.slurm
@pytest.mark.slow
def test_pretraining_ran_ddp_on_the_gpus_slurm_bound(slurm_run: dict) -> None:
    # Only the pretraining reran (it goes before the preprocessing step, whose remade verdicts would
    # rerun the cohort's QC table and what follows it).
    assert list(slurm_run["pretraining"]) == ["pretrain"], slurm_run["pretraining_output"][-4000:]
    (job_id,) = slurm_run["pretraining"]["pretrain"]
    job = slurm_job(job_id)
    assert job["JobState"] == "COMPLETED" and job["NumCPUs"] == "2", job
    assert "gpu:2" in job.get("TresPerJob", "") + job.get("TresPerNode", ""), job
    log = (slurm_run["on_slurm"] / "results" / "logs" / "pretrain" / f"{slurm_run['variant']}.log").read_text()
    assert f"gpu_slots: CUDA_VISIBLE_DEVICES=0,1 (SLURM job {job_id}:" in log, log[-3000:]
    assert re.search(r"\b2 process\(es\) on cpu", log), log[-3000:]


@needs_slurm
@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_and_local_pretraining_give_the_same_weights(slurm_run: dict) -> None:
    on_slurm = load_file(str(slurm_run["on_slurm"] / slurm_run["weights"]))
    local = load_file(str(slurm_run["local"] / slurm_run["weights"]))
    assert on_slurm.keys() == local.keys()
    for name in on_slurm:
        np.testing.assert_array_equal(on_slurm[name], local[name], err_msg=name)


# --- grouping: one submission per batch of images (the workflow batches the images) ----------------
def profile_groups() -> tuple[dict[str, str], dict[str, int]]:
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    return profile["groups"], profile["group-components"]


def test_profile_groups_every_per_image_rule(snakemake_workdir: Path) -> None:
    """Every per-image rule is in a group (else it would be one submission per batch and step), and
    the group names have batch sizes."""
    groups, components = profile_groups()
    listed = set(run_snakemake(snakemake_workdir, "--list-rules").stdout.split())
    per_image = {rule for rule in listed if rule.startswith("preprocess_")} - {
        "preprocess_all", "preprocess_template", "preprocess_check", "preprocess_accepted", "preprocess_cohort_qc",
        "preprocess_step_settings"}
    assert set(groups) == per_image, set(groups) ^ per_image
    assert set(groups.values()) == set(components)


@needs_slurm
@pytest.mark.slurm
@pytest.mark.slow
def test_per_image_rules_go_to_slurm_as_one_job_per_batch(slurm_run: dict) -> None:
    run, local = slurm_run["on_slurm"], slurm_run["local_tiny_run"]
    # the cohort's input checks in one batch job, four chain steps of one batch of images in one
    # job: two submissions
    submitted = slurm_run["preprocessing"]
    assert {name: len(ids) for name, ids in submitted.items()} == {"preprocess_check": 1, "preprocess_batch": 1}, (
        slurm_run["preprocessing_output"][-4000:])
    check_job, chain_job = (slurm_job(submitted[name][0]) for name in ("preprocess_check", "preprocess_batch"))
    assert check_job["JobState"] == chain_job["JobState"] == "COMPLETED", (check_job, chain_job)
    # the batch's checks run one after another: one CPU
    assert check_job["NumCPUs"] == "1", check_job
    chain_log = next(run.glob("results/logs/slurm/group_preprocess_batch_*/**/*.log")).read_text()
    for rule in ("preprocess_n4", "preprocess_register", "preprocess_skullstrip", "preprocess_model_ready"):
        assert f"rule {rule}:" in chain_log or f"localrule {rule}:" in chain_log, (rule, chain_log[-3000:])
    # the remade verdicts are those of the local run (a verdict also records how long its gzip check took)
    batch = CHECK_BATCH.format(cohort="ADNI", batch="0000")
    remade, made_locally = ([{k: v for k, v in verdict.items() if k != "gzip_crc_check_s"}
                             for verdict in json.loads((root / batch).read_text())] for root in (run, local))
    assert remade == made_locally and len(remade) >= len(slurm_run["volumes"])


@needs_slurm
@pytest.mark.slurm
@pytest.mark.slow
def test_aggregating_rules_run_where_snakemake_runs(tiny_full_run: Path, tmp_path: Path) -> None:
    """Table 1 only reads metrics files: under the SLURM profile it runs on the submitting host
    (``localrules``), with no sbatch."""
    run = copy_run(tiny_full_run, tmp_path / "run")
    remade = run_snakemake(run, paths.TABLE1.format(ext="csv"), "--forcerun=results_table", "--profile", str(PROFILE),
                           FAST_POLLING, "--jobs=2", env=VENV_ON_PATH, timeout=300)
    assert "localrule results_table:" in remade.stdout, remade.stdout[-4000:]
    assert submitted_jobs(remade.stdout) == {}, remade.stdout[-4000:]
