# Shared set-up for every stage: the config is validated before any rule is defined, and the
# facts every rule file needs (cohort names, path patterns, fingerprint helpers) are set up once here.
import sys

from workflow import paths
from workflow.config_checks import validate_config
from workflow.fingerprints import code_fingerprint, data_fingerprints, with_user_folders_ancient
from workflow.smk import shell_prefix

validate_config(config)

COHORTS = list(config["cohorts"])

shell.prefix(shell_prefix(workflow.deployment_settings.deployment_method, sys.executable))


wildcard_constraints:
    cohort="|".join(COHORTS),
    subject="[A-Za-z0-9]+",
    session="[A-Za-z0-9]+",
    seed=r"\d+",
