"""The per-image preprocessing steps as a command line, each over a batch of images: what rules
preprocess_n4, preprocess_register, preprocess_skullstrip and preprocess_model_ready run.

    python -m workflow.preprocess_job n4 --settings results/preprocess/settings/n4.json \\
        --voxel-size 2 --out results/preprocess/ADNI/n4/batch-0000 --threads 1 \\
        --image 002_S_0413 M000 <native T1> --image ...
    python -m workflow.preprocess_job register --settings results/preprocess/settings/registration.json \\
        --voxel-size 2 --n4 results/preprocess/ADNI/n4/batch-0000 --template ... --template-brainmask ... \\
        --out results/preprocess/ADNI/registration/batch-0000

Each step reads its settings file (written by rule preprocess_step_settings from the config), takes
its images from the previous step's batch folder (N4: from ``--image``) and calls the step's
function in :mod:`workflow.preprocess`, :mod:`workflow.skullstrip` or :mod:`workflow.preprocess_qc`
for each image (:mod:`workflow.preprocess_batch`). Why a command and not a ``script:``: Snakemake
reads a script rule's source once per job while it plans the DAG; a ``shell:`` rule costs it
nothing. Logging goes to stderr, which the rule sends to its log file.
"""

from __future__ import annotations

import argparse

from workflow.logs import log_to
from workflow.preprocess_batch import DONE, Outcome, read_outcomes, run_step
from workflow.settings import ModelReadySettings, N4Settings, RegistrationSettings, SkullstripSettings


def file_names(args: argparse.Namespace, compressed_n4: bool = True) -> dict[str, str]:
    from workflow.preprocess import image_file_names

    return image_file_names(args.voxel_size, compressed_n4)


def n4(args: argparse.Namespace) -> None:
    from workflow.preprocess import bias_correct

    settings = N4Settings.read(args.settings)
    images = [Outcome(subject, session, DONE, files={"t1": t1}) for subject, session, t1 in args.image]
    run_step("n4", images, args.out, file_names(args, settings.compressed),
             lambda image, out: bias_correct(image.files["t1"], out["n4"], out["bias"], settings, threads=args.threads))


def register(args: argparse.Namespace) -> None:
    from workflow.preprocess import register_to_template

    settings = RegistrationSettings.read(args.settings)
    run_step("registration", read_outcomes(args.n4), args.out, file_names(args),
             lambda image, out: register_to_template(image.files["n4"], args.template, args.template_brainmask,
                                                     out["affine"], out["crop"], settings, threads=args.threads))


def skullstrip(args: argparse.Namespace) -> None:
    from workflow.skullstrip import skull_strip

    settings = SkullstripSettings.read(args.settings)
    run_step("skullstrip", read_outcomes(args.registration), args.out, file_names(args),
             lambda image, out: skull_strip(image.files["crop"], out["mask"], out["brain"], settings,
                                            threads=args.threads))


def model_ready(args: argparse.Namespace) -> None:
    """The model-ready volume, then the image's QC (which reads that volume)."""
    from workflow.preprocess import make_model_ready
    from workflow.preprocess_qc import image_qc

    settings = ModelReadySettings.read(args.settings)
    registered = {(o.subject, o.session): o for o in read_outcomes(args.registration)}

    def process(image: Outcome, out: dict[str, str]) -> None:
        registration = registered[(image.subject, image.session)].files
        crop, affine = registration["crop"], registration["affine"]
        make_model_ready(crop, image.files["mask"], out["volume"], out["volume_sidecar"], settings)
        truth = {option: pattern.format(subject=image.subject, session=image.session) if pattern else ""
                 for option, pattern in (("truth", args.truth), ("brainmask", args.truth_brainmask))}
        image_qc(cohort=args.cohort, subject=image.subject, session=image.session, crop_path=crop,
                 mask_path=image.files["mask"], affine_path=affine, template_crop_path=args.template_crop,
                 template_brainmask_path=args.template_brainmask, truth_path=truth["truth"],
                 truth_brainmask_path=truth["brainmask"], qc_path=out["qc"], mosaic_path=out["mosaic"],
                 volume_path=out["volume"])

    run_step("model_ready", read_outcomes(args.skullstrip), args.out, file_names(args), process)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workflow.preprocess_job", description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)

    def step(name: str, run, folders: list[str], threads: bool = True) -> argparse.ArgumentParser:
        sub = steps.add_parser(name)
        sub.set_defaults(run=run)
        sub.add_argument("--settings", required=True, help="the step's settings file (JSON)")
        sub.add_argument("--voxel-size", type=float, required=True, help="the working grid (mm), in file names")
        sub.add_argument("--out", required=True, help="the step's batch folder")
        for option in folders:
            sub.add_argument(f"--{option}", required=True)
        if threads:
            sub.add_argument("--threads", type=int, default=1, help="ITK / torch threads")
        return sub

    first = step("n4", n4, [])
    first.add_argument("--image", nargs=3, action="append", required=True, metavar=("SUBJECT", "SESSION", "T1"),
                       help="one image of the batch (repeat, in the batch's order)")
    step("register", register, ["n4", "template", "template-brainmask"])
    step("skullstrip", skullstrip, ["registration"])
    ready = step("model-ready", model_ready, ["registration", "skullstrip", "template-crop", "template-brainmask",
                                              "cohort"], threads=False)
    # '' on real cohorts, which have no ground truth
    ready.add_argument("--truth", default="", help="synthetic ground-truth JSON pattern ({subject}, {session})")
    ready.add_argument("--truth-brainmask", default="", help="synthetic brain mask pattern ({subject}, {session})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with log_to(None):
        args.run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
