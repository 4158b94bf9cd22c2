"""The input check decompresses a .nii.gz to its end and checks the gzip CRC-32 and length trailer:
a file damaged late in the stream (garbage voxels that nibabel reads without complaint) or with a
wrong trailer is excluded with a reason naming the file. Small images, about a second."""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import QC_THRESHOLDS
from scipy import ndimage

from workflow import paths
from workflow import preprocess as pp
from workflow import preprocess_qc as qc
from workflow.settings import InputCheckSettings

CHECK = InputCheckSettings(voxel_size_range_mm=(0.3, 5.0), min_axis_voxels=16)


def smooth_volume() -> np.ndarray:
    """A smooth int16 volume with noise: compresses like an MRI, so deflate uses Huffman blocks."""
    rng = np.random.default_rng(0)
    shape = (40, 48, 44)
    return (ndimage.gaussian_filter(rng.random(shape), 3) * 3000 + rng.normal(0, 30, shape)).astype(np.int16)


def late_flip_that_still_decodes(good: bytes) -> bytes:
    """``good`` with one byte flipped near the end of the deflate stream, at the first position
    (counting back from the trailer) where the data still decodes to full length but differ: the
    damage only the CRC-32 reveals."""
    expected = gzip.decompress(good)
    for back in range(9, 4096):  # the last 8 bytes are the trailer (CRC-32, length)
        damaged = bytearray(good)
        damaged[len(good) - back] ^= 0xFF
        inflate = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate: no header, no CRC check
        header_length = 10  # nibabel writes no optional gzip header fields
        try:
            data = inflate.decompress(bytes(damaged[header_length:-8]))
        except zlib.error:
            continue
        if inflate.eof and len(data) == len(expected) and data != expected:
            return bytes(damaged)
    raise AssertionError("no late byte flip that still decodes: change smooth_volume")


def write_images(folder: Path) -> dict[str, Path]:
    """A valid .nii.gz, one with a late byte flip that still decodes, one with a wrong CRC trailer."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.nii.gz"
    nib.save(nib.Nifti1Image(smooth_volume(), np.diag([2.0, 2.0, 2.0, 1.0])), str(good))
    raw = good.read_bytes()
    assert raw[3] == 0, "nibabel wrote optional gzip header fields; late_flip_that_still_decodes assumes none"
    flipped = folder / "flipped.nii.gz"
    flipped.write_bytes(late_flip_that_still_decodes(raw))
    crc, length = struct.unpack("<II", raw[-8:])
    bad_crc = folder / "bad_crc.nii.gz"
    bad_crc.write_bytes(raw[:-8] + struct.pack("<II", crc ^ 0x5A5A5A5A, length))
    return {"good": good, "flipped": flipped, "bad_crc": bad_crc}


def test_damaged_gzip_images_are_excluded_and_a_valid_one_passes(tmp_path: Path) -> None:
    images = write_images(tmp_path / "native")
    # What made this a bug: nibabel reads both damaged files without an error (one with garbage voxels).
    reference = np.asarray(nib.load(str(images["good"])).dataobj)
    assert not np.array_equal(np.asarray(nib.load(str(images["flipped"])).dataobj), reference)
    assert np.array_equal(np.asarray(nib.load(str(images["bad_crc"])).dataobj), reference)

    verdicts = {name: pp.check_t1(path, tmp_path / f"{name}.json", "C", name, "M000", CHECK)
                for name, path in images.items()}
    assert verdicts["good"]["passed"] and verdicts["good"]["reason"] == ""
    for name in ("flipped", "bad_crc"):
        verdict = verdicts[name]
        assert not verdict["passed"], verdict
        assert verdict["reason"].startswith(f"unreadable image: damaged gzip file {images[name]}: "), verdict
        assert "CRC check failed" in verdict["reason"] or "invalid compressed data" in verdict["reason"], verdict
        assert "expected a complete gzip stream" in verdict["reason"]
    assert "CRC check failed" in verdicts["bad_crc"]["reason"]
    assert verdicts["good"]["gzip_crc_check_s"] >= 0  # the verdict records that (and how long) it checked

    # The damaged files reach the cohort's exclusions table (the path of every unreadable input).
    table = pd.DataFrame([{"cohort": "C", "subject": name, "session": "M000", "source_id": name,
                           "visit_code": "bl", "acq_date": "2020-01-01", "path": str(path)}
                          for name, path in images.items()])
    images_tsv = tmp_path / "images.tsv"
    table.to_csv(images_tsv, sep="\t", index=False)
    verdict_paths = [str(tmp_path / f"{name}.json") for name in images]
    accepted = pp.list_accepted(images_tsv, verdict_paths, tmp_path / "accepted.tsv")
    assert list(accepted["subject"]) == ["good"]
    damaged_tsv = tmp_path / "damaged.tsv"
    table[table["subject"] != "good"].to_csv(damaged_tsv, sep="\t", index=False)
    qc.cohort_qc("C", damaged_tsv, verdict_paths, [], QC_THRESHOLDS, tmp_path / "qc.tsv", tmp_path / "exclusions.tsv")
    exclusions = pd.read_csv(tmp_path / "exclusions.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(exclusions.columns) == paths.EXCLUSION_COLUMNS
    assert sorted(exclusions["subject"]) == ["bad_crc", "flipped"]
    for _, row in exclusions.iterrows():
        assert row["file"] == str(images[row["subject"]])
        assert f"damaged gzip file {images[row['subject']]}" in row["reason"]


@pytest.mark.parametrize("case", ["truncated", "trailing_garbage", "second_member_damaged"])
def test_gzip_damage_names_what_is_wrong(tmp_path: Path, case: str) -> None:
    """Other damage the stream check sees: a cut stream, junk after it, a bad second gzip member."""
    data = smooth_volume().tobytes()
    one = gzip.compress(data)
    if case == "truncated":
        content, words = one[: len(one) - 20], "ends early"
    elif case == "trailing_garbage":
        content, words = one + b"junk after the stream", "Not a gzipped file"
    else:
        second = bytearray(gzip.compress(data))
        second[-8] ^= 0x01  # its CRC-32
        content, words = one + bytes(second), "CRC check failed"
    path = tmp_path / f"{case}.gz"
    path.write_bytes(content)
    assert words in pp.gzip_damage(path)


def test_gzip_damage_passes_intact_and_uncompressed_files(tmp_path: Path) -> None:
    data = smooth_volume().tobytes()
    two_members = tmp_path / "two_members.gz"  # as pigz/bgzip-style writers produce
    two_members.write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:]))
    plain = tmp_path / "plain.nii"
    plain.write_bytes(data)
    assert pp.gzip_damage(two_members) == "" and pp.gzip_damage(plain) == ""
    assert gzip.GzipFile(fileobj=io.BytesIO(two_members.read_bytes())).read() == data


def test_a_check_that_fails_is_that_images_verdict_and_the_batch_goes_on(tmp_path: Path, monkeypatch) -> None:
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(smooth_volume(), np.eye(4)), str(good))
    real_inspect = pp.inspect_t1

    def inspect(path, *args):
        if Path(path).name == "odd.nii.gz":
            raise RuntimeError("an unforeseen reader error")
        return real_inspect(path, *args)

    monkeypatch.setattr(pp, "inspect_t1", inspect)
    images = [["A", "M000", str(tmp_path / "odd.nii.gz")], ["B", "M000", str(good)]]
    written = pp.check_batch(images, "C", CHECK, tmp_path / "batch-0000.json")
    assert [v["passed"] for v in written] == [False, True]
    assert written[0]["reason"] == "input check failed (RuntimeError: an unforeseen reader error)"
    assert pp.read_verdicts([str(tmp_path / "batch-0000.json")])[("A", "M000")] == written[0]
