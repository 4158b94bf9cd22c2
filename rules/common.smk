# Shared set-up for every stage: the config is validated before any rule is defined, and the
# facts every rule file needs (cohort names, path patterns, code files) are computed once here.
import sys

from workflow import paths
from workflow.config_checks import validate_config
from workflow.smk import code_files, shell_prefix

validate_config(config)

COHORTS = list(config["cohorts"])

shell.prefix(shell_prefix(workflow.deployment_settings.deployment_method, sys.executable))


wildcard_constraints:
    cohort="|".join(COHORTS),
    subject="[A-Za-z0-9]+",
    session="[A-Za-z0-9]+",
    seed=r"\d+",
