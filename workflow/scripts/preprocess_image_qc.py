"""Rule preprocess_image_qc: QC metrics and mosaic of one preprocessed image."""

from workflow.logs import log_to
from workflow.preprocess_qc import image_qc

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    image_qc(
        cohort=snakemake.wildcards.cohort,  # noqa: F821
        subject=snakemake.wildcards.subject,  # noqa: F821
        session=snakemake.wildcards.session,  # noqa: F821
        crop_path=snakemake.input.crop,  # noqa: F821
        mask_path=snakemake.input.mask,  # noqa: F821
        affine_path=snakemake.input.affine,  # noqa: F821
        template_crop_path=snakemake.input.template_crop,  # noqa: F821
        template_brainmask_path=snakemake.input.template_brainmask,  # noqa: F821
        truth_path=snakemake.params.truth,  # noqa: F821
        truth_brainmask_path=snakemake.params.truth_brainmask,  # noqa: F821
        qc_path=snakemake.output.qc,  # noqa: F821
        mosaic_path=snakemake.output.mosaic,  # noqa: F821
        volume_path=snakemake.input.volume,  # noqa: F821
    )
