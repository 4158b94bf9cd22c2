"""Rule convert_clinica: a LONI ADNI / AIBL download -> Clinica's BIDS tree + exclusions."""

from workflow.convert import convert_clinica_cohort
from workflow.logs import log_to
from workflow.settings import ConvertSettings

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    convert_clinica_cohort(
        fmt=snakemake.params.fmt,  # noqa: F821
        cohort=snakemake.wildcards.cohort,  # noqa: F821
        images_dir=snakemake.params.folders["images"],  # noqa: F821
        clinical_dir=snakemake.params.folders["clinical"],  # noqa: F821
        xml_dir=snakemake.params.folders.get("xml"),  # noqa: F821
        settings=ConvertSettings.from_params(snakemake.params.settings),  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
        bids_out=snakemake.output.bids,  # noqa: F821
        exclusions_out=snakemake.output.exclusions,  # noqa: F821
        log_path=snakemake.log[0],  # noqa: F821
    )
