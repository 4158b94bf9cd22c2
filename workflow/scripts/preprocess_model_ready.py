"""Rule preprocess_model_ready: the stripped crop at the model's input shape, as .npy + sidecar."""

from workflow.logs import log_to
from workflow.preprocess import make_model_ready

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    make_model_ready(
        crop_path=snakemake.input.crop,  # noqa: F821
        mask_path=snakemake.input.mask,  # noqa: F821
        volume_path=snakemake.output.volume,  # noqa: F821
        sidecar_path=snakemake.output.sidecar,  # noqa: F821
        shape=snakemake.params.shape,  # noqa: F821
        dtype=snakemake.params.dtype,  # noqa: F821
    )
