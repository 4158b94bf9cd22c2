"""Rule convert_nacc: NACC MRI session zips (DICOM) -> one T1 NIfTI per zip + exclusions."""

from workflow.convert import convert_nacc_cohort
from workflow.logs import log_to
from workflow.settings import ConvertSettings

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    convert_nacc_cohort(
        cohort=snakemake.wildcards.cohort,  # noqa: F821
        zip_dir=snakemake.params.folders["images"],  # noqa: F821
        settings=ConvertSettings.from_params(snakemake.params.settings),  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
        images_out=snakemake.output.images,  # noqa: F821
        exclusions_out=snakemake.output.exclusions,  # noqa: F821
    )
