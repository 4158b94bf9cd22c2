"""Time the preprocessing chain per image and step, at 1 mm and 2 mm, on synthetic heads.

Each subject runs in a fresh child process (so import costs and peak memory are those of a rule):
synthetic head with known pose (workflow.synthetic_mri) -> N4 -> antsRegistrationSyNQuick[a] + crop
-> skull strip -> model-ready volume -> QC against the ground truth. Prints one line per subject and
a median summary per voxel size (wall seconds, and CPU seconds of all threads: on a busy machine
CPU / threads estimates the wall time of a quiet one); nothing is asserted.

    .venv/bin/python benchmarks/preprocess.py --voxel-sizes 1 2 --subjects 3 --threads 2
    .venv/bin/python benchmarks/preprocess.py --voxel-sizes 1 --n4-shrink-factors 4 6   # Clinica vs fast N4
    .venv/bin/python benchmarks/preprocess.py --voxel-sizes 1 --fit-voxel-sizes none 2  # affine fitted at 1 vs 2 mm
    .venv/bin/python benchmarks/preprocess.py --voxel-sizes 2 --registration-from none config/demo.yaml
        # config.yaml's registration (Clinica's preset) against the demo's stages

The 1 mm case takes minutes per subject on 2 cores; run it on a quiet machine. With several N4 shrink
factors (or registration fit voxel sizes) every subject runs once per combination, and each line also gives the correlation of the fitted
log bias field with the applied one inside the brain (how well N4 recovers the truth).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODEL_SHAPE = {1.0: (160, 208, 176), 2.0: (80, 104, 88)}


def run_subject(settings, seed: int, threads: int, workdir: str, queue) -> None:
    """Child process: the whole chain on one synthetic subject with ``settings`` (a
    PreprocessSettings); puts a dict of timings and metrics."""
    start = time.perf_counter()
    import nibabel as nib
    import numpy as np

    from workflow import preprocess as pp
    from workflow import preprocess_qc as qc
    from workflow import skullstrip, synthetic_mri

    voxel_size_mm = settings.template.voxel_size_mm
    # a folder of its own per run (two registration settings share every other name part)
    folder = Path(tempfile.mkdtemp(dir=workdir, prefix=(
        f"v{voxel_size_mm:g}_s{seed}_n4shrink{settings.n4.shrink_factor}"
        f"_fit{settings.registration.fit_voxel_size_mm}_bet{settings.skullstrip.deepbet_shape[0]}_")))
    volume = synthetic_mri.synthesize_volume(voxel_size_mm, 0.5, np.random.default_rng(seed))
    files = {name: folder / name for name in ("t1.nii.gz", "truth_mask.nii.gz", "truth.json")}
    nib.save(volume.image, str(files["t1.nii.gz"]))
    nib.save(volume.brain_mask, str(files["truth_mask.nii.gz"]))
    files["truth.json"].write_text(json.dumps(volume.truth))
    template = {key: folder / Path(name).name for key, name in pp.template_files(voxel_size_mm).items()}
    pp.prepare_template(settings.template, template["head"], template["crop"], template["brainmask"])
    out = {name: folder / name for name in ("n4.nii.gz", "bias.nii.gz", "affine.mat", "crop.nii.gz", "mask.nii.gz",
                                            "brain.nii.gz", "volume.npy", "qc.json", "mosaic.png")}
    setup = time.perf_counter() - start

    steps: dict[str, float] = {}

    def timed(name, function, *args, **kwargs):
        # CPU seconds of all threads beside wall seconds: on a shared machine the wall time swells
        # with the load while CPU time / threads still estimates the wall time of a quiet machine
        begin, begin_cpu = time.perf_counter(), time.process_time()
        result = function(*args, **kwargs)
        steps[name] = time.perf_counter() - begin
        steps[f"{name}_cpu"] = time.process_time() - begin_cpu
        return result

    timed("n4", pp.bias_correct, files["t1.nii.gz"], out["n4.nii.gz"], out["bias.nii.gz"], settings.n4, threads=threads)
    brain = np.asarray(volume.brain_mask.dataobj) > 0
    fitted = np.asarray(nib.load(str(out["bias.nii.gz"])).dataobj)
    bias_correlation = float(np.corrcoef(np.log(volume.bias_field[brain]), np.log(fitted[brain]))[0, 1])
    timed("registration", pp.register_to_template, out["n4.nii.gz"], template["head"], template["brainmask"],
          out["affine.mat"], out["crop.nii.gz"], settings.registration, threads=threads)
    timed("skullstrip", skullstrip.skull_strip, out["crop.nii.gz"], out["mask.nii.gz"], out["brain.nii.gz"],
          settings.skullstrip, threads=threads)
    timed("model_ready", pp.make_model_ready, out["crop.nii.gz"], out["mask.nii.gz"], out["volume.npy"],
          pp.volume_sidecar_path(out["volume.npy"]), settings.model_ready)
    metrics = timed("qc", qc.image_qc, "BENCH", f"S{seed}", "M000", out["crop.nii.gz"], out["mask.nii.gz"],
                    out["affine.mat"], template["crop"], template["brainmask"], files["truth.json"],
                    files["truth_mask.nii.gz"], out["qc.json"], out["mosaic.png"])
    queue.put({
        "voxel_size_mm": voxel_size_mm, "seed": seed, "native_shape": list(volume.image.shape), **steps,
        "n4_bias_correlation": bias_correlation,
        "chain_s": sum(v for k, v in steps.items() if not k.endswith("_cpu")),
        "chain_cpu_s": sum(v for k, v in steps.items() if k.endswith("_cpu")), "setup_s": setup,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **{k: metrics[k] for k in ("pose_error_mm", "pose_error_max_mm", "dice_truth", "ncc_template")},
    })


def fit_voxel_size(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def configured_settings(registration_from: str | None = None):
    """config.yaml's preprocessing settings (PreprocessSettings), validated with its defaults filled;
    with ``registration_from`` (a config overlay such as config/demo.yaml), that file's
    ``preprocess.registration`` keys replace config.yaml's."""
    from workflow.config_checks import validate_schemas
    from workflow.settings import preprocess_settings

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    if registration_from is not None:
        overlay = yaml.safe_load(Path(registration_from).read_text()) or {}
        config["preprocess"]["registration"].update(overlay.get("preprocess", {}).get("registration", {}))
    validate_schemas(config)
    return preprocess_settings(config)


def bench_settings(base, voxel_size_mm: float, method: str, n4_shrink_factor: int, fit_voxel_size_mm: float | None,
                   deepbet_shape: tuple[int, int, int], registration=None):
    """``base`` at another grid, skull stripper, N4 shrink factor, registration (preset or stages;
    None keeps base's), registration fit voxel size and deepbet grid."""
    from dataclasses import replace

    return replace(
        base, template=replace(base.template, voxel_size_mm=voxel_size_mm),
        n4=replace(base.n4, shrink_factor=n4_shrink_factor),
        registration=replace(registration or base.registration, voxel_size_mm=voxel_size_mm,
                             fit_voxel_size_mm=fit_voxel_size_mm),
        skullstrip=replace(base.skullstrip, method=method, deepbet_shape=deepbet_shape),
        model_ready=replace(base.model_ready, shape=MODEL_SHAPE.get(voxel_size_mm, (80, 104, 88))),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voxel-sizes", type=float, nargs="+", default=[2.0, 1.0])
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--method", choices=["deepbet", "synthstrip"], default="deepbet")
    configured = configured_settings()
    parser.add_argument("--n4-shrink-factors", type=int, nargs="+", default=[configured.n4.shrink_factor],
                        help="N4 shrink factors to compare (default: config.yaml's; 4 = Clinica / ANTs default)")
    parser.add_argument("--fit-voxel-sizes", type=fit_voxel_size, nargs="+",
                        default=[configured.registration.fit_voxel_size_mm],
                        help="voxel sizes (mm) the affine is fitted at (default: config.yaml's); "
                             "none = the working grid, as Clinica")
    parser.add_argument("--deepbet-shapes", type=int, nargs="+", default=[configured.skullstrip.deepbet_shape[0]],
                        help="edge of the cubic grid deepbet's second network sees (default: config.yaml's; "
                             "256 = deepbet's own)")
    parser.add_argument("--registration-from", nargs="+", default=["none"], metavar="CONFIG",
                        help="registration settings to compare: config.yaml's with each file's "
                             "preprocess.registration on top (none = config.yaml's alone)")
    args = parser.parse_args()
    registrations = [configured_settings(None if name.lower() == "none" else name).registration
                     for name in args.registration_from]
    context = multiprocessing.get_context("spawn")
    columns = ["n4", "registration", "skullstrip", "model_ready", "qc", "chain_s", "n4_cpu", "registration_cpu",
               "skullstrip_cpu", "chain_cpu_s", "peak_rss_mb", "pose_error_mm", "dice_truth", "n4_bias_correlation"]
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as workdir:
        for voxel, shrink, fit, edge, registration in (
                (v, s, f, e, r) for v in args.voxel_sizes for s in args.n4_shrink_factors
                for f in args.fit_voxel_sizes for e in args.deepbet_shapes for r in registrations):
            setting = (f"{voxel:g} mm N4 shrink {shrink} {registration.method} "
                       f"fit {'grid' if fit is None else f'{fit:g} mm'}"
                       + (f" deepbet {edge}^3" if args.method == "deepbet" else ""))
            rows = []
            for seed in range(1, args.subjects + 1):
                queue = context.Queue()
                child = context.Process(target=run_subject,
                                        args=(bench_settings(configured, voxel, args.method, shrink, fit,
                                                             (edge, edge, edge), registration), seed,
                                              args.threads, workdir, queue))
                child.start()
                row = None
                while row is None:  # a child that fails puts nothing: stop instead of waiting forever
                    try:
                        row = queue.get(timeout=5)
                    except Empty:
                        if not child.is_alive():
                            raise SystemExit(f"the {voxel:g} mm subject {seed} failed (exit code {child.exitcode})")
                child.join()
                rows.append(row)
                print(f"{setting} seed {seed} native {row['native_shape']}: "
                      + ", ".join(f"{c} {row[c]:.2f}" for c in columns), flush=True)
            print(f"== {setting}, {len(rows)} subjects, {args.threads} threads, {args.method}: median "
                  + ", ".join(f"{c} {statistics.median(r[c] for r in rows):.2f}" for c in columns)
                  + f"; max pose error {max(r['pose_error_max_mm'] for r in rows):.2f} mm", flush=True)


if __name__ == "__main__":
    main()
