"""Rule preprocess_skullstrip: brain mask and stripped T1 of the registered crop (deepbet or SynthStrip)."""

from workflow.logs import log_to
from workflow.skullstrip import skull_strip

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    settings = snakemake.params.skullstrip  # noqa: F821
    skull_strip(
        crop_path=snakemake.input.crop,  # noqa: F821
        mask_path=snakemake.output.mask,  # noqa: F821
        brain_path=snakemake.output.brain,  # noqa: F821
        method=settings["method"],
        device=settings["device"],
        deepbet_model_dir=settings["deepbet_model_dir"],
        synthstrip_model=settings["synthstrip_model"],
        synthstrip_sha256=settings["synthstrip_sha256"],
        border_mm=settings["border_mm"],
        conform_voxel_mm=settings["conform_voxel_mm"],
        shape_limits=settings["shape_limits"],
        threads=snakemake.threads,  # noqa: F821
    )
