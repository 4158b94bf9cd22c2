"""Rule preprocess_register: affine registration of the N4 image to MNI, then Clinica's crop."""

from workflow.logs import log_to
from workflow.preprocess import register_to_template
from workflow.settings import RegistrationSettings

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    register_to_template(
        n4_path=snakemake.input.n4,  # noqa: F821
        template_head_path=snakemake.input.template,  # noqa: F821
        template_brainmask_path=snakemake.input.template_brainmask,  # noqa: F821
        affine_path=snakemake.output.affine,  # noqa: F821
        crop_path=snakemake.output.crop,  # noqa: F821
        settings=RegistrationSettings.from_params(snakemake.params.settings),  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
    )
