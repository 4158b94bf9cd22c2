"""Rule preprocess_n4: N4 bias field correction of one native T1 (corrected image + bias field)."""

from workflow.logs import log_to
from workflow.preprocess import bias_correct

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    settings = snakemake.params.n4  # noqa: F821
    bias_correct(
        t1_path=snakemake.input.t1,  # noqa: F821
        corrected_path=snakemake.output.n4,  # noqa: F821
        bias_path=snakemake.output.bias,  # noqa: F821
        spline_distance_mm=settings["spline_distance_mm"],
        shrink_factor=settings["shrink_factor"],
        iterations=settings["iterations"],
        tolerance=settings["tolerance"],
        threads=snakemake.threads,  # noqa: F821
    )
