"""Rule preprocess_register: affine registration of the N4 image to MNI, then Clinica's crop."""

from workflow.logs import log_to
from workflow.preprocess import register_to_template

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    register_to_template(
        n4_path=snakemake.input.n4,  # noqa: F821
        template_head_path=snakemake.input.template,  # noqa: F821
        template_brainmask_path=snakemake.input.template_brainmask,  # noqa: F821
        affine_path=snakemake.output.affine,  # noqa: F821
        crop_path=snakemake.output.crop,  # noqa: F821
        voxel_size_mm=snakemake.params.voxel_size_mm,  # noqa: F821
        seed=snakemake.params.seed,  # noqa: F821
        type_of_transform=snakemake.params.type_of_transform,  # noqa: F821
        attempts=snakemake.params.attempts,  # noqa: F821
        retry_below_ncc=snakemake.params.retry_below_ncc,  # noqa: F821
        fit_voxel_size_mm=snakemake.params.fit_voxel_size_mm,  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
    )
