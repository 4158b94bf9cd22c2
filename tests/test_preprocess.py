"""Preprocessing stage, called directly: real N4, antspyx registration, deepbet and SynthStrip code on
synthetic heads (workflow.synthetic_mri) with a known pose at 2 mm (1 mm: benchmarks/preprocess.py)."""

from __future__ import annotations

import gzip
import json
import logging
import re
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import QC_THRESHOLDS, REPO

from workflow import paths, skullstrip, synthetic_mri
from workflow import preprocess as pp
from workflow import preprocess_qc as qc
from workflow.preprocess_batch import DONE, Outcome, write_outcomes
from workflow.settings import (
    InputCheckSettings, LinearStage, ModelReadySettings, N4Settings, RegistrationSettings,
    SettingsError, SkullstripSettings, TemplateSettings,
)
from workflow.templates import mni_template

VOXEL_MM = 2.0
# Clinica's settings at the tests' 2 mm grid: N4 with ANTs' shrink factor, one registration fitted
# at the working grid; deepbet; the schema's checks and QC thresholds.
CHECK = InputCheckSettings(voxel_size_range_mm=(0.3, 5.0), min_axis_voxels=16)
N4 = N4Settings(spline_distance_mm=200.0, shrink_factor=4, iterations=(50, 50, 50, 50), tolerance=1e-7,
                compressed=True)
REGISTRATION = RegistrationSettings(voxel_size_mm=VOXEL_MM, seed=1, type_of_transform="antsRegistrationSyNQuick[a]",
                                    stages=None, attempts=1, retry_below_ncc=0.0, fit_voxel_size_mm=None)
DEEPBET = SkullstripSettings(method="deepbet", device="cpu", deepbet_model_dir=None, deepbet_shape=(256, 256, 256),
                             synthstrip_model=None, synthstrip_sha256=None, border_mm=1.0, conform_voxel_mm=1.0,
                             shape_limits=(192, 320))


def write_synthetic_subject(folder: Path, seed: int) -> dict[str, Path]:
    """A head from the shared generator (workflow.synthetic_mri) at 2 mm with its ground truth
    (truth.json, brain mask) and the bias field it applied."""
    volume = synthetic_mri.synthesize_volume(VOXEL_MM, 0.5, np.random.default_rng(seed))
    names = ("t1.nii.gz", "brainmask.nii.gz", "bias.nii.gz", "truth.json")
    files = {name.split(".")[0]: folder / f"S{seed}_{name}" for name in names}
    nib.save(volume.image, str(files["t1"]))
    nib.save(volume.brain_mask, str(files["brainmask"]))
    nib.save(nib.Nifti1Image(volume.bias_field, volume.image.affine), str(files["bias"]))
    files["truth"].write_text(json.dumps(volume.truth))
    return files


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One synthetic subject through the whole chain at 2 mm (about 20 s on 2 cores)."""
    root = tmp_path_factory.mktemp("preprocess_chain")
    subject = write_synthetic_subject(root, seed=1)
    template = {key: root / Path(name).name for key, name in pp.template_files(VOXEL_MM).items()}
    pp.prepare_template(TemplateSettings(None, VOXEL_MM), template["head"], template["crop"], template["brainmask"])
    out = {name: root / f"out_{name}" for name in ("n4", "bias", "affine", "crop", "mask", "brain", "qc", "mosaic")}
    out["n4"], out["bias"] = root / "n4.nii.gz", root / "bias.nii.gz"
    out["affine"], out["crop"] = root / "affine.mat", root / "crop.nii.gz"
    out["mask"], out["brain"] = root / "mask.nii.gz", root / "brain.nii.gz"
    out["volume"], out["qc"], out["mosaic"] = root / "volume.npy", root / "qc.json", root / "mosaic.png"
    pp.bias_correct(subject["t1"], out["n4"], out["bias"], N4, threads=2)
    pp.register_to_template(out["n4"], template["head"], template["brainmask"], out["affine"], out["crop"],
                            REGISTRATION, threads=2)
    skullstrip.skull_strip(out["crop"], out["mask"], out["brain"], DEEPBET, threads=2)
    pp.make_model_ready(out["crop"], out["mask"], out["volume"], pp.volume_sidecar_path(out["volume"]),
                        ModelReadySettings(shape=(40, 52, 44), dtype="float16"))
    metrics = qc.image_qc("C", "S1", "M000", out["crop"], out["mask"], out["affine"], template["crop"],
                          template["brainmask"], subject["truth"], subject["brainmask"], out["qc"], out["mosaic"],
                          volume_path=str(out["volume"]))
    return {"subject": subject, "template": template, "out": out, "metrics": metrics, "root": root}


def test_registration_recovers_the_true_pose(chain: dict) -> None:
    metrics = chain["metrics"]
    assert metrics["pose_error_mm"] < 2.0, metrics
    assert metrics["ncc_template"] > 0.6, metrics


def _pose_error(chain: dict, affine: Path) -> float:
    truth = json.loads(chain["subject"]["truth"].read_text())
    crop = nib.load(str(chain["out"]["crop"]))
    template_mask = np.asarray(nib.load(str(chain["template"]["brainmask"])).dataobj) > 0
    points = qc.voxel_world_points(template_mask, crop.affine, step=2)
    return qc.pose_error_mm(qc.read_itk_affine(affine), np.asarray(truth["template_to_subject"]), points)[0]


def test_an_affine_fitted_on_coarser_copies_recovers_the_pose_and_keeps_the_grid(chain: dict, tmp_path: Path) -> None:
    """fit_voxel_size_mm: the affine comes from 2.5 mm copies of the 2 mm images (as 1 mm heads are
    fitted on 2 mm copies) and resamples the 2 mm image: the same crop grid, the pose recovered."""
    out, template = chain["out"], chain["template"]
    ncc = pp.register_to_template(out["n4"], template["head"], template["brainmask"], tmp_path / "a.mat",
                                  tmp_path / "crop.nii.gz", replace(REGISTRATION, fit_voxel_size_mm=2.5), threads=2)
    crop, reference = nib.load(str(tmp_path / "crop.nii.gz")), nib.load(str(out["crop"]))
    assert crop.shape == reference.shape and np.allclose(crop.affine, reference.affine)
    error = _pose_error(chain, tmp_path / "a.mat")
    assert error < 1.2 and ncc > chain["metrics"]["ncc_template"] - 0.05, (error, ncc, chain["metrics"])


def test_a_retry_fits_at_the_working_grid(chain: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Only the first attempt fits on the coarse copies; a retry fits the images as they are. Coarse
    fits can miss a pose entirely: 4 mm copies of this 2 mm head gave NCC 0.12 in two runs here and
    0.90 in a third (two threads), hence the retry. An unreachable threshold makes both attempts run."""
    out, template = chain["out"], chain["template"]
    with caplog.at_level(logging.INFO, logger="workflow.preprocess"):
        ncc = pp.register_to_template(out["n4"], template["head"], template["brainmask"], tmp_path / "a.mat",
                                      tmp_path / "crop.nii.gz",
                                      replace(REGISTRATION, attempts=2, retry_below_ncc=1.01, fit_voxel_size_mm=4.0),
                                      threads=2)
    attempts = [record.getMessage() for record in caplog.records if record.getMessage().startswith("registration attempt")]
    assert len(attempts) == 2 and "fitted at 4x4x4 mm" in attempts[0] and "fitted at 2x2x2 mm" in attempts[1], attempts
    nccs = [float(message.rsplit(" ", 1)[1]) for message in attempts]
    assert ncc == pytest.approx(max(nccs), abs=5e-4) and ncc >= chain["metrics"]["ncc_template"] - 0.01
    assert _pose_error(chain, tmp_path / "a.mat") < 1.2


def test_the_preset_written_as_stages_gives_the_same_affine(chain: dict, tmp_path: Path) -> None:
    """``stages`` runs antsRegistration with the arguments antspyx builds for Clinica's preset, each
    stage's levels and sampling made settings: written out, the preset's own stages give the same
    transform, byte for byte, and the same crop. One thread in a fresh process, as the seeded repeat
    below (two threads add the metric's sums in a varying order)."""
    out, template = chain["out"], chain["template"]
    quick = LinearStage("Rigid", (1000, 500, 250, 0), (8, 4, 2, 1), (3, 2, 1, 0), 0.25)
    as_stages = replace(REGISTRATION, type_of_transform=None, stages=(quick, replace(quick, transform="Affine")))
    script = textwrap.dedent(f"""
        import sys
        from workflow import preprocess as pp
        from workflow.settings import RegistrationSettings
        for name, values in (("preset", {REGISTRATION.as_params()!r}), ("stages", {as_stages.as_params()!r})):
            pp.register_to_template({str(out["n4"])!r}, {str(template["head"])!r}, {str(template["brainmask"])!r},
                                    sys.argv[1] + f"/{{name}}.mat", sys.argv[1] + f"/{{name}}.nii.gz",
                                    RegistrationSettings.from_params(values), threads=1)
    """)
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=REPO)
    assert (tmp_path / "preset.mat").read_bytes() == (tmp_path / "stages.mat").read_bytes()
    preset, stages = (np.asarray(nib.load(str(tmp_path / f"{name}.nii.gz")).dataobj) for name in ("preset", "stages"))
    assert np.corrcoef(preset.ravel(), stages.ravel())[0, 1] > 0.9999


def test_the_demo_stages_recover_the_pose(chain: dict, tmp_path: Path) -> None:
    """The demo's cheaper stages (no rigid 4x level, no zero-iteration full-resolution level, a tenth
    of the voxels sampled) land within 1.2 mm of the true pose, as the preset does."""
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())["preprocess"]["registration"]
    stages = tuple(LinearStage.from_params(stage) for stage in demo["stages"])
    settings = replace(REGISTRATION, type_of_transform=demo["type_of_transform"], stages=stages)
    ncc = pp.register_to_template(chain["out"]["n4"], chain["template"]["head"], chain["template"]["brainmask"],
                                  tmp_path / "a.mat", tmp_path / "crop.nii.gz", settings, threads=2)
    assert _pose_error(chain, tmp_path / "a.mat") < 1.2
    assert ncc > chain["metrics"]["ncc_template"] - 0.02, (ncc, chain["metrics"])


@pytest.mark.parametrize("change, message", [
    ({"stages": None, "type_of_transform": None}, "exactly one of type_of_transform"),
    ({"stages": (LinearStage("Affine", (10,), (2,), (1,), 0.1),)}, "exactly one of type_of_transform"),
    ({"type_of_transform": None, "stages": (LinearStage("Rigid", (10,), (2,), (1,), 0.1),)}, "last stage must be Affine"),
])
def test_registration_settings_take_a_preset_or_affine_stages(change: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        replace(REGISTRATION, **change)


def test_a_stage_needs_one_entry_per_level() -> None:
    with pytest.raises(SettingsError, match="one entry per level"):
        LinearStage("Affine", (1000, 500), (8, 4, 2), (3, 2, 1), 0.25)
    with pytest.raises(SettingsError, match="sampling_rate"):
        LinearStage("Affine", (1000,), (8,), (3,), 0.0)


def test_registration_writes_one_affine_and_clinica_crop(chain: dict) -> None:
    matrix = qc.read_itk_affine(chain["out"]["affine"])
    assert matrix.shape == (4, 4) and np.allclose(matrix[3], [0, 0, 0, 1])
    crop = nib.load(str(chain["out"]["crop"]))
    assert crop.shape == (84, 104, 90)
    head = nib.load(str(chain["template"]["head"]))
    assert np.allclose(crop.affine[:3, 3], head.affine[:3, :3] @ [6, 6, 0] + head.affine[:3, 3])


def test_clinica_crop_box_at_1mm() -> None:
    assert pp.crop_slices(1.0) == (slice(12, 181), slice(13, 221), slice(0, 179))


def test_deepbet_mask_matches_truth(chain: dict) -> None:
    assert chain["metrics"]["dice_truth"] >= 0.9, chain["metrics"]
    assert 700 < chain["metrics"]["brain_volume_ml"] < 2500


def test_deepbet_shape_sets_the_grid_its_second_network_sees(chain: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """preprocess.skullstrip.deepbet_shape reaches deepbet's brain network (its own is 256^3), and a
    smaller grid still finds the same brain."""
    import deepbet

    seen = []
    run_model = deepbet.BrainExtraction.run_model

    def recording(self, x, small_shape=(128, 128, 128), shape=(256, 256, 256), bbox_margin=0.1):
        seen.append(tuple(shape))
        return run_model(self, x, small_shape, shape, bbox_margin)

    monkeypatch.setattr(deepbet.BrainExtraction, "run_model", recording)
    mask = skullstrip.deepbet_mask(chain["out"]["crop"], shape=(160, 160, 160))
    assert seen == [(160, 160, 160)]
    full = np.asarray(nib.load(str(chain["out"]["mask"])).dataobj) > 0  # the chain's, at deepbet's 256^3
    assert qc.dice(mask, full) > 0.9


def bias_fit(chain: dict, n4_path: Path, bias_path: Path) -> dict[str, float]:
    """How an N4 result of the chain's subject fits: correlation of its log field with the applied one
    inside the brain (``r``; Clinica's, from the chain, as ``clinica_r``) and the white-matter spread
    (coefficient of variation) of the raw, the corrected and the bias-free image."""
    load = lambda path: np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)  # noqa: E731
    brain = load(chain["subject"]["brainmask"]) > 0
    applied = np.log(load(chain["subject"]["bias"])[brain])
    correlation = lambda path: float(np.corrcoef(applied, np.log(load(path)[brain]))[0, 1])  # noqa: E731
    raw = load(chain["subject"]["t1"])
    clean = raw / load(chain["subject"]["bias"])
    white = brain & (clean > np.percentile(clean[brain], 75))
    spread = lambda image: float(image[white].std() / image[white].mean())  # noqa: E731
    return {"clinica_r": correlation(chain["out"]["bias"]), "r": correlation(bias_path),
            "raw": spread(raw), "corrected": spread(load(n4_path)), "clean": spread(clean)}


def n4_with_shrink_factor(chain: dict, folder: Path, shrink_factor: int) -> dict[str, float]:
    """N4 of the chain's subject with another shrink factor, and ``bias_fit`` of its result."""
    pp.bias_correct(chain["subject"]["t1"], folder / "n4.nii.gz", folder / "bias.nii.gz",
                    replace(N4, shrink_factor=shrink_factor), threads=2)
    return bias_fit(chain, folder / "n4.nii.gz", folder / "bias.nii.gz")


def test_n4_flattens_the_applied_bias(chain: dict) -> None:
    """White-matter intensities vary less after N4: at least 30 % of the bias-induced spread goes."""
    load = lambda path: np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)  # noqa: E731
    raw, corrected = load(chain["subject"]["t1"]), load(chain["out"]["n4"])
    assert np.allclose(raw, corrected * load(chain["out"]["bias"]), rtol=1e-3, atol=1e-3)
    fit = bias_fit(chain, chain["out"]["n4"], chain["out"]["bias"])
    assert fit["corrected"] < fit["raw"] - 0.3 * (fit["raw"] - fit["clean"]), fit


def test_fast_n4_sampling_fits_the_field_like_clinicas(chain: dict, tmp_path: Path) -> None:
    """config.yaml's speed option, shrink factor 6 at 1 mm, fits N4 on points 6 mm apart; at 2 mm that
    spacing is shrink factor 3. It must fit the applied field as well as Clinica's (within 0.05 in r)."""
    fit = n4_with_shrink_factor(chain, tmp_path, shrink_factor=3)
    assert fit["clinica_r"] > 0.5 and fit["r"] > fit["clinica_r"] - 0.05, fit


def test_demo_n4_still_flattens_the_bias(chain: dict, tmp_path: Path) -> None:
    """The demo's coarse N4 (shrink 8 at 2 mm: points 16 mm apart) fits the field less well than
    Clinica's, but still removes at least 30 % of the bias-induced white-matter spread."""
    fit = n4_with_shrink_factor(chain, tmp_path, shrink_factor=8)
    assert fit["r"] > 0.5 and fit["corrected"] < fit["raw"] - 0.3 * (fit["raw"] - fit["clean"]), fit


def test_model_ready_volume_and_sidecar(chain: dict) -> None:
    volume = np.load(chain["out"]["volume"])
    assert volume.shape == (40, 52, 44) and volume.dtype == np.float16
    assert float(volume.min()) == 0.0 and float(volume.max()) == 1.0
    restored = pp.load_model_ready(chain["out"]["volume"])
    brain = np.asarray(nib.load(str(chain["out"]["brain"])).dataobj)
    assert restored.max() == pytest.approx(float(pp.resize_volume(brain, (40, 52, 44)).max()), rel=1e-3)
    json.loads(Path(pp.volume_sidecar_path(chain["out"]["volume"])).read_text())


def test_model_ready_uint8(chain: dict, tmp_path: Path) -> None:
    target = tmp_path / "v.npy"
    sidecar = pp.make_model_ready(chain["out"]["crop"], chain["out"]["mask"], target, pp.volume_sidecar_path(target),
                                  ModelReadySettings(shape=(20, 26, 22), dtype="uint8"))
    stored = np.load(target)
    assert stored.dtype == np.uint8 and stored.max() == 255 and sidecar["scale"] > 0


def test_mosaic_is_written(chain: dict) -> None:
    assert chain["out"]["mosaic"].stat().st_size > 5000


def _random_synthstrip_checkpoint(path: Path) -> None:
    import torch

    torch.save({"model_state_dict": skullstrip.new_strip_model().state_dict()}, path)


def test_synthstrip_runs_end_to_end_with_random_weights(chain: dict, tmp_path: Path) -> None:
    """Every line of the SynthStrip path but the trained weights (coarse input so that it is fast)."""
    model = tmp_path / "synthstrip.1.pt"
    _random_synthstrip_checkpoint(model)
    mask_path, brain_path = tmp_path / "mask.nii.gz", tmp_path / "brain.nii.gz"
    settings = replace(DEEPBET, method="synthstrip", synthstrip_model=str(model), conform_voxel_mm=2.0,
                       shape_limits=(64, 320))
    skullstrip.skull_strip(chain["out"]["crop"], mask_path, brain_path, settings, threads=2)
    mask = nib.load(str(mask_path))
    assert mask.shape == nib.load(str(chain["out"]["crop"])).shape
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}


def test_strip_model_matches_synthstrip_layout() -> None:
    model = skullstrip.new_strip_model()
    assert len(model.state_dict()) == 54
    assert sum(p.numel() for p in model.parameters()) == 2_566_561


def test_synthstrip_rejects_a_wrong_model_file(tmp_path: Path) -> None:
    import torch

    with pytest.raises(FileNotFoundError, match=r"FREESURFER_HOME/models/synthstrip.1.pt"):
        skullstrip.load_synthstrip_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(FileNotFoundError, match="no model file"):
        skullstrip.load_synthstrip_checkpoint(None)
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot be loaded"):
        skullstrip.load_synthstrip_checkpoint(text)
    other = tmp_path / "other.pt"
    torch.save({"model_state_dict": {"conv.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(ValueError, match="does not match the SynthStrip network"):
        skullstrip.load_synthstrip_checkpoint(other)
    bare = tmp_path / "bare.pt"
    torch.save(skullstrip.new_strip_model().state_dict(), bare)
    with pytest.raises(ValueError, match="model_state_dict"):
        skullstrip.load_synthstrip_checkpoint(bare)
    good = tmp_path / "good.pt"
    _random_synthstrip_checkpoint(good)
    with pytest.raises(ValueError, match="sha256"):
        skullstrip.load_synthstrip_checkpoint(good, sha256="0" * 64)
    assert len(skullstrip.load_synthstrip_checkpoint(good)) == 54


def test_user_template_is_checked(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.nii"
    nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.float32), np.eye(4)), str(wrong))
    with pytest.raises(ValueError, match=r"expected shape \(193, 229, 193\)"):
        pp.load_user_template(wrong, 2.0)
    with pytest.raises(FileNotFoundError, match="mni_icbm152_t1_tal_nlin_sym_09c.nii"):
        pp.load_user_template(tmp_path / "absent.nii", 2.0)
    right = tmp_path / pp.FREESURFER_TEMPLATE_NAME
    nib.save(mni_template(1.0), str(right))
    resampled = pp.load_user_template(right, 2.0)
    assert resampled.shape == (96, 114, 96)


# --- bad inputs -----------------------------------------------------------------------------------
def write_bad_inputs(folder: Path, good_t1: Path) -> dict[str, tuple[Path, str]]:
    """Each kind of bad input with a word its exclusion reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    shape = (40, 48, 44)
    bad: dict[str, tuple[Path, str]] = {}

    def save(name: str, data: np.ndarray, image_affine: np.ndarray = affine) -> Path:
        path = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, image_affine), str(path))
        return path

    truncated = folder / "truncated.nii.gz"
    raw = good_t1.read_bytes()
    truncated.write_bytes(raw[: len(raw) // 2])
    bad["truncated"] = (truncated, "unreadable")
    garbage = folder / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(b"this is not a NIfTI file" * 20))
    bad["garbage"] = (garbage, "unreadable")
    bad["fourd"] = (save("fourd", np.ones((*shape, 3), np.float32)), "4-D")
    bad["twod"] = (save("twod", np.ones((40, 48), np.float32)), "2-D")
    bad["slice"] = (save("slice", np.ones((40, 48, 1), np.float32)), "too thin")
    bad["zeros"] = (save("zeros", np.zeros(shape, np.float32)), "constant")
    nan = np.ones(shape, np.float32)
    nan[3, 4, 5] = np.nan
    bad["nan"] = (save("nan", nan), "NaN")
    bad["voxel"] = (save("voxel", np.random.default_rng(0).random(shape).astype(np.float32),
                         np.diag([50.0, 2.0, 2.0, 1.0])), "voxel size")
    return bad


def test_each_bad_input_is_rejected_with_its_reason(chain: dict, tmp_path: Path) -> None:
    bad = write_bad_inputs(tmp_path / "bad", chain["subject"]["t1"])
    for name, (path, word) in bad.items():
        verdict = pp.check_t1(path, tmp_path / f"{name}.json", "C", name, "M000", CHECK)
        assert not verdict["passed"] and word in verdict["reason"], (name, verdict)
    good = pp.check_t1(chain["subject"]["t1"], tmp_path / "good.json", "C", "S1", "M000", CHECK)
    assert good["passed"] and good["reason"] == ""


def test_cohort_qc_lists_every_image_and_excludes_failures(chain: dict, tmp_path: Path) -> None:
    """Check failures and QC-threshold failures reach qc.tsv as passed=false and the exclusions table."""
    bad = write_bad_inputs(tmp_path / "bad", chain["subject"]["t1"])
    rows = [("S1", str(chain["subject"]["t1"])), ("S2", str(chain["subject"]["t1"]))]
    rows += [(name, str(path)) for name, (path, _) in bad.items()]
    images = pd.DataFrame([{"cohort": "C", "subject": s, "session": "M000", "source_id": s, "visit_code": "bl",
                            "acq_date": "2020-01-01", "path": p} for s, p in rows])
    images_tsv = tmp_path / "images.tsv"
    images.to_csv(images_tsv, sep="\t", index=False)
    # the checks in batch files of four images, as the rule writes them (one verdict list per batch)
    batches = pp.check_batches(images_tsv, 4)
    assert [len(keys) for keys in batches.values()] == [4, 4, len(rows) - 8]
    paths_of = dict(rows)
    verdicts = []
    for label, keys in batches.items():
        batch_path = tmp_path / f"batch-{label}.json"
        written = pp.check_batch([[s, t, paths_of[s]] for s, t in keys], "C", CHECK, batch_path)
        assert [(v["subject"], v["session"]) for v in written] == keys
        verdicts.append(str(batch_path))
    accepted = pp.list_accepted(images_tsv, verdicts, tmp_path / "accepted.tsv")
    assert list(accepted["subject"]) == ["S1", "S2"]
    poor = dict(chain["metrics"], subject="S2", ncc_template=0.1)
    (tmp_path / "S2_qc.json").write_text(json.dumps(poor))
    # the model-ready step's batch folder, as workflow.preprocess_batch writes it
    folder = tmp_path / "model_ready" / "batch-0000"
    folder.mkdir(parents=True)
    write_outcomes(folder, "model_ready", [Outcome("S1", "M000", DONE, files={"qc": str(chain["out"]["qc"])}),
                                           Outcome("S2", "M000", DONE, files={"qc": str(tmp_path / "S2_qc.json")})])
    table = qc.cohort_qc("C", images_tsv, verdicts, [str(folder)], QC_THRESHOLDS, tmp_path / "qc.tsv",
                         tmp_path / "exclusions.tsv")
    assert len(table) == len(rows)
    assert list(table.loc[table["passed"] == "true", "subject"]) == ["S1"]
    assert table.loc[table["subject"] == "S1", "volume"].item() == str(chain["out"]["volume"])
    exclusions = pd.read_csv(tmp_path / "exclusions.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(exclusions.columns) == paths.EXCLUSION_COLUMNS
    assert set(exclusions["subject"]) == {"S2", *bad}
    assert "NCC" in exclusions.loc[exclusions["subject"] == "S2", "reason"].item()
    for name, (path, word) in bad.items():
        row = exclusions[exclusions["subject"] == name].iloc[0]
        assert word in row["reason"] and row["file"] == str(path) and row["stage"] == "preprocess"


def test_pose_error_uses_ras_and_lps_consistently(tmp_path: Path) -> None:
    """An ITK .mat of a known translation reads back as the same RAS transform."""
    from scipy.io import savemat

    # ITK (LPS): y = x + (1, 2, 3)  ==  RAS: y = x + (-1, -2, 3)
    savemat(tmp_path / "t.mat", {"AffineTransform_float_3_3": np.array([1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 2, 3.0])[:, None],
                                 "fixed": np.array([5.0, 6, 7])[:, None]}, format="4")
    matrix = qc.read_itk_affine(tmp_path / "t.mat")
    assert np.allclose(matrix[:3, 3], [-1, -2, 3]) and np.allclose(matrix[:3, :3], np.eye(3))
    mean, largest = qc.pose_error_mm(matrix, np.eye(4), np.zeros((4, 3)))
    assert mean == pytest.approx(np.sqrt(14)) and largest == pytest.approx(np.sqrt(14))


def test_missing_user_files_stop_before_any_rule(tmp_path: Path) -> None:
    settings = {"template": None, "skullstrip": {"method": "synthstrip", "synthstrip_model": str(tmp_path / "x.pt")}}
    with pytest.raises(FileNotFoundError, match=r"\$FREESURFER_HOME/models/synthstrip.1.pt"):
        pp.check_user_files(settings)
    settings = {"template": str(tmp_path / "t.nii"), "skullstrip": {"method": "deepbet", "synthstrip_model": None}}
    with pytest.raises(FileNotFoundError, match="mni_icbm152_t1_tal_nlin_sym_09c.nii"):
        pp.check_user_files(settings)


def test_a_seeded_registration_repeats_exactly_and_seed_0_is_refused(chain: dict, tmp_path: Path) -> None:
    """Seed 1: the same transform twice in one process, bit for bit, although the first registration
    moved ITK's process-wide generator on (unseeded, ANTs would draw from it). ITK reads its thread
    count once per process, and with two threads the metric's sums are added in a varying order
    (two such runs differed by 0.0102 once), so the repeat runs in a fresh process with one thread."""
    out, template = chain["out"], chain["template"]
    script = textwrap.dedent(f"""
        import sys
        from workflow import preprocess as pp
        from workflow.settings import RegistrationSettings
        settings = RegistrationSettings.from_params({REGISTRATION.as_params()!r})
        for run in ("first", "second"):
            pp.register_to_template({str(out["n4"])!r}, {str(template["head"])!r}, {str(template["brainmask"])!r},
                                    sys.argv[1] + f"/{{run}}.mat", sys.argv[1] + f"/{{run}}.nii.gz",
                                    settings, threads=1)
    """)
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=REPO)
    first, second = (qc.read_itk_affine(tmp_path / f"{run}.mat") for run in ("first", "second"))
    np.testing.assert_array_equal(first, second)
    with pytest.raises(ValueError, match="seed must be at least 1, got 0"):
        pp.register_to_template(out["n4"], template["head"], template["brainmask"], tmp_path / "zero.mat",
                                tmp_path / "zero.nii.gz", replace(REGISTRATION, seed=0))
    assert not (tmp_path / "zero.mat").exists()


def test_registration_retries_keep_the_best_attempt(chain: dict, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """With a threshold no registration reaches, every attempt runs and the best NCC is kept.

    The attempts are compared through the function's own log, within one call: ITK's multithreaded
    metric makes two runs with the same seed differ in the 4th decimal, so a result from another
    call (the chain's) is no exact reference."""
    with caplog.at_level(logging.INFO, logger="workflow.preprocess"):
        ncc = pp.register_to_template(chain["out"]["n4"], chain["template"]["head"], chain["template"]["brainmask"],
                                      tmp_path / "a.mat", tmp_path / "crop.nii.gz",
                                      replace(REGISTRATION, attempts=2, retry_below_ncc=1.01), threads=2)
    attempts = [float(re.search(r"NCC with the template (-?[0-9.]+)", record.getMessage()).group(1))
                for record in caplog.records if record.getMessage().startswith("registration attempt")]
    assert len(attempts) == 2 and ncc == pytest.approx(max(attempts), abs=5e-4), (attempts, ncc)
    assert ncc >= chain["metrics"]["ncc_template"] - 0.01  # never worse than the single (Clinica) run
    kept = np.asarray(nib.load(str(tmp_path / "crop.nii.gz")).dataobj)
    template = np.asarray(nib.load(str(chain["template"]["crop"])).dataobj)
    mask = np.asarray(nib.load(str(chain["template"]["brainmask"])).dataobj)
    assert qc.masked_ncc(kept, template, mask) == pytest.approx(ncc, abs=1e-5)
