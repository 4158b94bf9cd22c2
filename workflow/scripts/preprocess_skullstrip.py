"""Rule preprocess_skullstrip: brain mask and stripped T1 of the registered crop (deepbet or SynthStrip)."""

from workflow.logs import log_to
from workflow.settings import SkullstripSettings
from workflow.skullstrip import skull_strip

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    skull_strip(
        crop_path=snakemake.input.crop,  # noqa: F821
        mask_path=snakemake.output.mask,  # noqa: F821
        brain_path=snakemake.output.brain,  # noqa: F821
        settings=SkullstripSettings.from_params(snakemake.params.settings),  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
    )
