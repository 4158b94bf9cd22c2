"""Rule preprocess_model_ready: the stripped crop at the model's input shape (.npy + sidecar), then
the image's QC metrics and mosaic."""

from workflow.logs import log_to
from workflow.preprocess import make_model_ready
from workflow.preprocess_qc import image_qc
from workflow.settings import ModelReadySettings

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    inputs, outputs, params, wildcards = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards  # noqa: F821
    make_model_ready(
        crop_path=inputs.crop,
        mask_path=inputs.mask,
        volume_path=outputs.volume,
        sidecar_path=outputs.sidecar,
        settings=ModelReadySettings.from_params(params.settings),
    )
    image_qc(
        cohort=wildcards.cohort,
        subject=wildcards.subject,
        session=wildcards.session,
        crop_path=inputs.crop,
        mask_path=inputs.mask,
        affine_path=inputs.affine,
        template_crop_path=inputs.template_crop,
        template_brainmask_path=inputs.template_brainmask,
        truth_path=params.truth,
        truth_brainmask_path=params.truth_brainmask,
        qc_path=outputs.qc,
        mosaic_path=outputs.mosaic,
        volume_path=outputs.volume,
    )
