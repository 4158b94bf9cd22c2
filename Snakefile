# CITab reproduction: raw cohorts -> preprocessed MRI + model-ready clinical tables ->
# cross-tabular pretraining -> per-cohort fine-tuning -> result tables.
# Stage rules live in rules/*.smk; the Python they run lives in workflow/ and model/.
import os

from snakemake.utils import min_version

min_version("9.0")


# The paper configuration always loads first (from the repository, whatever -d says);
# --configfile overlays (config/demo.yaml, tests/config.tiny.yaml) go on top of it.
configfile: os.path.join(workflow.basedir, "config.yaml")


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/synthesize.smk"
include: "rules/convert.smk"
include: "rules/intake.smk"
include: "rules/preprocess.smk"
include: "rules/tables.smk"
include: "rules/headers.smk"
include: "rules/train.smk"
include: "rules/report.smk"
include: "rules/bundle.smk"
include: "rules/paper.smk"


rule all:
    input:
        expand(paths.TABLE1, ext=["csv", "md", "tex"]),
        BUNDLES,
    default_target: True
