"""The typed settings layer (workflow.settings): built once from the validated config, carried by
a rule's params as plain builtins, read back by the job from its settings file with every key
checked."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_snakemake

from model.augment_settings import AugmentSettings
from workflow import config_checks
from workflow import settings as settings_stage
from workflow import train
from workflow.settings import (
    EvaluateSettings,
    FinetuneSettings,
    IntakeSettings,
    PreprocessSettings,
    PretrainSettings,
    SettingsError,
    SyntheticCohortSettings,
)


@pytest.fixture(scope="module")
def paper_config() -> dict:
    """config.yaml, validated with its defaults filled (the real-data folder check skipped)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    original = config_checks.check_real_cohort_paths
    config_checks.check_real_cohort_paths = lambda config: None
    try:
        config_checks.validate_config(config)
    finally:
        config_checks.check_real_cohort_paths = original
    return config


def schema_keys(section: str) -> set[str]:
    schema = yaml.safe_load(config_checks.section_schema(section).read_text())
    return set(schema["properties"])


@pytest.mark.parametrize("section, cls, other_keys", [
    ("tables", settings_stage.TablesSettings, settings_stage.TABLES_INPUT_KEYS),
    ("pretrain", PretrainSettings, settings_stage.PRETRAIN_RUNTIME_KEYS + settings_stage.PRETRAIN_PLAN_KEYS),
    ("finetune", FinetuneSettings, settings_stage.FINETUNE_RUNTIME_KEYS + settings_stage.FINETUNE_PLAN_KEYS),
    ("synthetic", SyntheticCohortSettings, settings_stage.SYNTHETIC_RUN_KEYS),
])
def test_every_schema_key_is_a_field_or_a_runtime_or_plan_key(section, cls, other_keys) -> None:
    fields = {field.name for field in dataclasses.fields(cls)}
    assert schema_keys(section) - fields - set(other_keys) == set()


def test_evaluate_schema_keys_are_fields_or_runtime_keys() -> None:
    fields = {field.name for field in dataclasses.fields(EvaluateSettings)}
    assert schema_keys("evaluate") - fields == {"gpus", "threads", "mem_mb"}


def test_a_config_key_no_field_carries_is_an_error(paper_config: dict) -> None:
    config = copy.deepcopy(paper_config)
    config["finetune"]["label_smoothing"] = 0.1  # as if added to the schema but not to FinetuneSettings
    with pytest.raises(SettingsError, match=r"'finetune' has keys \['label_smoothing'\] that FinetuneSettings"):
        train.finetune_settings(config, "citab", "ADNI")


def test_objects_are_typed_and_per_cohort_values_resolved(paper_config: dict) -> None:
    citab = train.pretrain_settings(paper_config)
    assert isinstance(citab.augment, AugmentSettings) and citab.augment.flip_axes == (0, 1, 2)
    assert citab.image_shape == (160, 208, 176) and citab.corruption_rate == 0.0
    mmcl = {cohort: train.cohort_pretrain_settings(paper_config, "mmcl", cohort) for cohort in ("ADNI", "NACC")}
    assert (mmcl["ADNI"].corruption_rate, mmcl["NACC"].corruption_rate, mmcl["ADNI"].epochs) == (0.3, 0.0, 500)
    aibl = train.finetune_settings(paper_config, "citab", "AIBL")
    assert (aibl.augment_probability, aibl.corruption_rate, aibl.pretrained, aibl.tabular_prior) == (0.0, 0.3, True, None)
    assert aibl.class_names == ("CN", "MCI", "DE")
    hyperfusion = train.finetune_settings(paper_config, "hyperfusion", "ADNI")
    assert hyperfusion.tabular_prior["epochs"] > 0 and hyperfusion.pretrained is False
    evaluate = train.evaluate_settings(paper_config, "citab_no_ssl")
    assert evaluate.model_variant == "citab" and evaluate.model == paper_config["model"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        evaluate.batch_size = 1


def test_params_are_builtins_that_snakemake_compares(paper_config: dict) -> None:
    """Snakemake compares params by the repr of builtin values and skips other objects: the params
    entry must be plain, and a changed setting must change its repr."""
    params = train.finetune_settings(paper_config, "citab", "ADNI").as_params()
    assert json.loads(json.dumps(params)) == params  # only JSON types
    changed = copy.deepcopy(paper_config)
    changed["finetune"]["lr"] = 2e-4
    assert repr(train.finetune_settings(changed, "citab", "ADNI").as_params()) != repr(params)
    changed["finetune"]["corruption_rate"]["NACC"] = 0.5  # another cohort's rate: this job's params stay
    assert train.finetune_settings(changed, "citab", "ADNI").as_params()["corruption_rate"] == 0.3


@pytest.mark.parametrize("kind", ["tables", "pretrain", "finetune", "evaluate"])
def test_settings_file_round_trip(paper_config: dict, kind: str, tmp_path: Path) -> None:
    built = {"tables": lambda: settings_stage.tables_settings(paper_config),
             "pretrain": lambda: train.pretrain_settings(paper_config),
             "finetune": lambda: train.finetune_settings(paper_config, "daft", "NACC"),
             "evaluate": lambda: train.evaluate_settings(paper_config, "daft")}[kind]()
    path = tmp_path / "settings.json"
    settings_stage.write_settings(kind, built.as_params(), path, tmp_path / "log.txt")
    assert settings_stage.SETTINGS_TYPES[kind].read(path) == built
    assert "settings" in (tmp_path / "log.txt").read_text()


def test_a_wrong_settings_file_names_the_file_and_keys(paper_config: dict, tmp_path: Path) -> None:
    values = train.finetune_settings(paper_config, "citab", "ADNI").as_params()
    del values["lr"]
    values["learning_rate"] = 1e-4
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(values))
    with pytest.raises(SettingsError, match=rf"{path}: not finetune settings \(missing keys \['lr'\], "
                                            r"unknown keys \['learning_rate'\]\)"):
        FinetuneSettings.read(path)
    path.write_text("{not json")
    with pytest.raises(SettingsError, match=rf"{path}: cannot read evaluate settings"):
        EvaluateSettings.read(path)


def test_preprocess_settings_are_one_object_per_step(paper_config: dict) -> None:
    """Each preprocessing rule's params hold its own step's object: a changed N4 setting changes the
    N4 step's settings only, the seed the registration's only."""
    settings = settings_stage.preprocess_settings(paper_config)
    assert settings.n4.iterations == (50, 50, 50, 50) and settings.n4.shrink_factor == 6
    assert settings.registration.seed == 1 and settings.registration.voxel_size_mm == 1.0
    assert settings.model_ready.shape == (160, 208, 176) and settings.qc.brain_volume_ml == (700, 2500)
    assert settings.skullstrip.shape_limits == (192, 320) and settings.check.voxel_size_range_mm == (0.3, 5.0)
    assert PreprocessSettings.from_params(settings.as_params()) == settings

    def changed_steps(section: str, key: str, value) -> list[str]:
        config = copy.deepcopy(paper_config)
        if section:
            config["preprocess"][section][key] = value
        else:
            config["preprocess"][key] = value
        other = settings_stage.preprocess_settings(config)
        return [name for name in settings_stage.field_names(PreprocessSettings)
                if getattr(other, name) != getattr(settings, name)]

    assert changed_steps("n4", "shrink_factor", 4) == ["n4"]
    assert changed_steps("", "random_seed", 2) == ["registration"]
    assert changed_steps("", "voxel_size_mm", 2.0) == ["template", "registration"]
    assert changed_steps("qc", "min_dice", 0.9) == ["qc"]
    # deleted N4 outputs are written without gzip (N4Settings.compressed), so N4 reruns
    assert changed_steps("", "keep_intermediates", False) == ["n4"]


def test_every_preprocess_schema_key_reaches_a_step(paper_config: dict) -> None:
    top = schema_keys("preprocess")
    fields = set(settings_stage.field_names(PreprocessSettings))
    assert top - fields - set(settings_stage.PREPROCESS_OTHER_KEYS) == set()
    config = copy.deepcopy(paper_config)
    config["preprocess"]["n4"]["shrink"] = 4  # a step key that N4Settings does not carry
    with pytest.raises(SettingsError, match=r"preprocess settings: n4: not n4 settings .*unknown keys \['shrink'\]"):
        settings_stage.preprocess_settings(config)


def test_each_converter_rule_carries_its_own_executable(paper_config: dict) -> None:
    clinica, nacc = (settings_stage.convert_settings(paper_config, tool) for tool in ("clinica", "dcm2niix"))
    assert clinica.t1_series == nacc.t1_series and clinica.converter is None
    changed = copy.deepcopy(paper_config)
    changed["convert"]["dcm2niix"] = "/opt/dcm2niix/bin/dcm2niix"
    assert settings_stage.convert_settings(changed, "clinica") == clinica
    assert settings_stage.convert_settings(changed, "dcm2niix").converter == "/opt/dcm2niix/bin/dcm2niix"
    assert schema_keys("convert") - {"t1_series"} == set(settings_stage.CONVERT_OTHER_KEYS)


def report_params(config: dict) -> dict[str, dict]:
    """Every report rule's one settings param, by rule."""
    from workflow import paper

    return {
        **{rule: paper.result_table_settings(config, table).as_params()
           for rule, table in (("results_table", "table1"), ("table2", "table2"), ("table3", "table3"))},
        "header_similarity_table": paper.header_similarity_table_settings(config).as_params(),
        "figure3": paper.figure3_settings(config).as_params(),
        "figure4": paper.figure4_settings(config).as_params(),
        "figure5": paper.figure5_settings(config).as_params(),
    }


def changed_rules(config: dict, change) -> set[str]:
    before = report_params(config)
    changed = copy.deepcopy(config)
    change(changed)
    after = report_params(changed)
    return {rule for rule in before if before[rule] != after[rule]}


def test_report_rules_get_typed_settings_that_round_trip(paper_config: dict) -> None:
    from workflow import paper

    types = {"results_table": settings_stage.ResultTableSettings, "table2": settings_stage.ResultTableSettings,
             "table3": settings_stage.ResultTableSettings,
             "header_similarity_table": settings_stage.HeaderSimilarityTableSettings,
             "figure3": settings_stage.Figure3Settings, "figure4": settings_stage.Figure4Settings,
             "figure5": settings_stage.Figure5Settings}
    params = report_params(paper_config)
    for rule, values in params.items():
        assert json.loads(json.dumps(values)) == values, rule
        typed = types[rule].from_params(values, source=rule)
        assert typed.as_params() == values, rule
    table3 = settings_stage.ResultTableSettings.from_params(params["table3"])
    assert table3.average_column and table3.reference == "citab" and table3.variants[2] == "citab"
    assert isinstance(table3.uncertainty, settings_stage.Uncertainty) and table3.uncertainty.permutations == 10000
    table1 = settings_stage.ResultTableSettings.from_params(params["results_table"])
    assert table1.majority_row and table1.reference is None and table1.variants[-1] == "citab"
    figure5 = settings_stage.Figure5Settings.from_params(params["figure5"])
    (citab, no_header) = figure5.panels.values()
    assert isinstance(citab.evaluate, EvaluateSettings) and citab.evaluate.image_shape == (160, 208, 176)
    assert (citab.variant, no_header.variant) == ("citab", "citab_no_header")
    assert figure5.cohort_tables["NACC"] == paper.cohort_tables(paper_config)["NACC"]
    assert isinstance(figure5.cohort_tables["NACC"], tuple)


@pytest.mark.parametrize("change, rules", [
    (lambda c: c["report"]["figures"].update(dpi=300), {"figure3", "figure4", "figure5"}),
    (lambda c: c["report"]["figures"].update(perplexity=10), {"figure4", "figure5"}),
    (lambda c: c["report"]["figures"].update(shared_feature="mmse"), {"figure3"}),
    (lambda c: c["report"].update(decimals=2), {"results_table", "table2", "table3", "header_similarity_table"}),
    (lambda c: c["report"]["paired_test"].update(permutations=500), {"results_table", "table2", "table3"}),
    (lambda c: c["report"]["table3"].update(variants=["citab_e3", "citab"]), {"table3"}),
    (lambda c: c["report"].update(majority_row=False), {"results_table"}),
    (lambda c: c["evaluate"].update(batch_size=2), {"figure3", "figure4", "figure5"}),
])
def test_a_report_setting_reaches_only_the_rules_that_use_it(paper_config: dict, change, rules) -> None:
    assert changed_rules(paper_config, change) == rules


def test_synthetic_cohort_settings_round_trip_and_resolve_the_cohort(paper_config: dict) -> None:
    settings = {cohort: settings_stage.synthetic_cohort_settings(paper_config, cohort) for cohort in ("ADNI", "NACC")}
    adni = settings["ADNI"]
    assert (adni.format, adni.subjects, settings["NACC"].format, settings["NACC"].subjects) == ("adni", 1689, "nacc", 1611)
    assert adni.mri_sessions_share == (0.6, 0.25, 0.15) and adni.follow_up_years == (1.0, 8.0)
    params = adni.as_params()
    assert json.loads(json.dumps(params)) == params and not {"threads", "mem_mb"} & set(params)
    assert SyntheticCohortSettings.from_params(params) == adni
    with pytest.raises(dataclasses.FrozenInstanceError):
        adni.seed = 1


def test_one_cohorts_subject_count_changes_only_its_synthesis_params(paper_config: dict) -> None:
    def params(config: dict) -> dict:
        return {cohort: settings_stage.synthetic_cohort_settings(config, cohort).as_params()
                for cohort in config["cohorts"]}

    before = params(paper_config)
    changed = copy.deepcopy(paper_config)
    changed["synthetic"]["subjects"]["AIBL"] = 50
    after = params(changed)
    assert [cohort for cohort in before if repr(before[cohort]) != repr(after[cohort])] == ["AIBL"]
    assert after["AIBL"]["subjects"] == 50
    changed["synthetic"]["threads"] = 1  # a runtime key: no cohort's params change
    changed["synthetic"]["mem_mb"] = 100
    assert params(changed) == after
    changed["synthetic"]["seed"] = 7  # what every cohort's files come from
    assert all(params(changed)[cohort]["seed"] == 7 for cohort in before)


def test_a_synthetic_key_no_field_carries_is_an_error(paper_config: dict) -> None:
    config = copy.deepcopy(paper_config)
    config["synthetic"]["dropout_share"] = 0.1  # as if added to the schema but not to SyntheticCohortSettings
    with pytest.raises(SettingsError, match=r"'synthetic' has keys \['dropout_share'\] that SyntheticCohortSettings"):
        settings_stage.synthetic_cohort_settings(config, "ADNI")
    config = copy.deepcopy(paper_config)
    config["synthetic"]["format"] = "nacc"  # the format is the cohort's, never the section's
    with pytest.raises(SettingsError, match=r"'synthetic' has keys \['format'\]"):
        settings_stage.synthetic_cohort_settings(config, "ADNI")
    config = copy.deepcopy(paper_config)
    config["synthetic"]["subjects"] = {"ADNI": 10}
    with pytest.raises(SettingsError, match="synthetic.subjects has no entry for cohort 'NACC'"):
        settings_stage.synthetic_cohort_settings(config, "NACC")


def test_intake_settings_round_trip_and_unset_prefix_is_none(paper_config: dict) -> None:
    adni = settings_stage.intake_settings(paper_config, "ADNI")
    assert adni.format == "adni" and adni.subject_prefix is None
    assert adni.files == paper_config["cohorts"]["ADNI"]["files"] and "adnimerge" in adni.files
    assert IntakeSettings.from_params(adni.as_params()) == adni
    config = copy.deepcopy(paper_config)
    config["cohorts"]["NACC"]["subject_prefix"] = "N"
    del config["cohorts"]["NACC"]["files"]
    nacc = IntakeSettings.from_params(settings_stage.intake_settings(config, "NACC").as_params())
    assert (nacc.format, nacc.files, nacc.subject_prefix) == ("nacc", None, "N")
    assert settings_stage.intake_settings(config, "ADNI") == adni  # another cohort's entry: unchanged


def test_every_cohort_key_is_an_intake_field_or_another_stages(paper_config: dict) -> None:
    schema = yaml.safe_load(config_checks.section_schema("config").read_text())
    cohort_keys = set(schema["properties"]["cohorts"]["additionalProperties"]["properties"])
    fields = set(settings_stage.field_names(IntakeSettings))
    assert cohort_keys - fields == set(settings_stage.COHORT_OTHER_KEYS)
    config = copy.deepcopy(paper_config)
    config["cohorts"]["ADNI"]["date_format"] = "%d/%m/%Y"
    with pytest.raises(SettingsError, match=r"'cohorts.ADNI' has keys \['date_format'\] that IntakeSettings"):
        settings_stage.intake_settings(config, "ADNI")


def test_settings_jobs_run_inside_the_snakemake_process(snakemake_workdir: Path) -> None:
    """The workflow profile's ``force-use-threads``: a local ``run:`` job is a thread of the running
    Snakemake, not a new Snakemake process (which re-parses the workflow for each of the dozens of
    settings jobs). Snakemake's ``--verbose`` log names each job it spawns."""
    target = "results/preprocess/settings/n4.json"
    process = run_snakemake(snakemake_workdir, "--cores", "1", "--verbose", target)
    assert (snakemake_workdir / target).is_file()
    assert "Finished jobid" in process.stdout
    assert "spawned job" not in process.stdout
