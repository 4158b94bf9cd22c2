"""Rule preprocess_template: the registration target, its crop and brain mask at the working voxel size."""

from workflow.logs import log_to
from workflow.preprocess import prepare_template
from workflow.settings import TemplateSettings

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    prepare_template(
        settings=TemplateSettings.from_params(snakemake.params.settings),  # noqa: F821
        head_path=snakemake.output.head,  # noqa: F821
        crop_path=snakemake.output.crop,  # noqa: F821
        brainmask_path=snakemake.output.brainmask,  # noqa: F821
    )
