"""The per-image preprocessing steps as a command line: what rules preprocess_n4, preprocess_register,
preprocess_skullstrip and preprocess_model_ready run.

    python -m workflow.preprocess_job n4 --settings results/preprocess/settings/n4.json \\
        --t1 <native T1> --corrected <n4.nii.gz> --bias <bias.nii.gz> --threads 2

Each step reads its settings file (written by rule preprocess_step_settings from the config) and
calls the step's function in :mod:`workflow.preprocess`, :mod:`workflow.skullstrip` or
:mod:`workflow.preprocess_qc`. Why a command and not a ``script:``: Snakemake reads a script rule's
source once per job while it plans the DAG, a sixth of a dry run's time at the paper's ~6,700
images (``benchmarks/dag_scale.py``); a ``shell:`` rule costs it nothing. Logging goes to stderr,
which the rule sends to its log file.
"""

from __future__ import annotations

import argparse

from workflow.logs import log_to
from workflow.settings import ModelReadySettings, N4Settings, RegistrationSettings, SkullstripSettings


def n4(args: argparse.Namespace) -> None:
    from workflow.preprocess import bias_correct

    bias_correct(args.t1, args.corrected, args.bias, N4Settings.read(args.settings), threads=args.threads)


def register(args: argparse.Namespace) -> None:
    from workflow.preprocess import register_to_template

    register_to_template(args.n4, args.template, args.template_brainmask, args.affine, args.crop,
                         RegistrationSettings.read(args.settings), threads=args.threads)


def skullstrip(args: argparse.Namespace) -> None:
    from workflow.skullstrip import skull_strip

    skull_strip(args.crop, args.mask, args.brain, SkullstripSettings.read(args.settings), threads=args.threads)


def model_ready(args: argparse.Namespace) -> None:
    """The model-ready volume, then the image's QC (which reads that volume)."""
    from workflow.preprocess import make_model_ready
    from workflow.preprocess_qc import image_qc

    make_model_ready(args.crop, args.mask, args.volume, args.sidecar, ModelReadySettings.read(args.settings))
    image_qc(cohort=args.cohort, subject=args.subject, session=args.session, crop_path=args.crop, mask_path=args.mask,
             affine_path=args.affine, template_crop_path=args.template_crop,
             template_brainmask_path=args.template_brainmask, truth_path=args.truth,
             truth_brainmask_path=args.truth_brainmask, qc_path=args.qc, mosaic_path=args.mosaic,
             volume_path=args.volume)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workflow.preprocess_job", description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)

    def step(name: str, run, files: list[str], threads: bool = True) -> argparse.ArgumentParser:
        sub = steps.add_parser(name)
        sub.set_defaults(run=run)
        sub.add_argument("--settings", required=True, help="the step's settings file (JSON)")
        for option in files:
            sub.add_argument(f"--{option}", required=True)
        if threads:
            sub.add_argument("--threads", type=int, default=1, help="ITK / torch threads")
        return sub

    step("n4", n4, ["t1", "corrected", "bias"])
    step("register", register, ["n4", "template", "template-brainmask", "affine", "crop"])
    step("skullstrip", skullstrip, ["crop", "mask", "brain"])
    ready = step("model-ready", model_ready, ["crop", "mask", "affine", "template-crop", "template-brainmask",
                                              "volume", "sidecar", "qc", "mosaic", "cohort", "subject", "session"],
                 threads=False)
    # '' on real cohorts, which have no ground truth
    ready.add_argument("--truth", default="", help="synthetic ground-truth JSON ('' for a real cohort)")
    ready.add_argument("--truth-brainmask", default="", help="synthetic brain mask ('' for a real cohort)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with log_to(None):
        args.run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
