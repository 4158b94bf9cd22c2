"""Synthetic clinical data of one cohort, in the cohort's native format (no images).

A cohort is planned first (subjects, visits, MRI sessions, all format-agnostic), then its values are
drawn from the priors below (published ADNI / AIBL / NACC distributions) and written as the native tables a real user
holds (``docs/interfaces.md`` section 1): ``ADNIMERGE.csv`` for ``adni``, the ``aibl_<table>_*.csv``
set for ``aibl``, the UDS visit table and the MRI table for ``nacc``.

Model, per subject: a baseline diagnosis drawn to match the cohort's class mix exactly, one latent
severity ``z`` (standard normal; higher = worse) that moves every cognitive score together, a
per-subject offset per score (so repeated visits resemble each other) and per-visit noise. Some
subjects convert CN -> MCI -> DE during follow-up; scores at a visit follow the diagnosis at that
date. Missingness follows section 6.3 (ADNI CSF/FDG missing per subject, NACC missingness rising
with severity, AIBL almost complete). Everything is drawn from one ``numpy`` generator seeded by
``(seed, cohort name)``, so the same seed gives byte-identical files.

Call :func:`generate_clinical` for the plan and the tables without volumes (fast: a few hundred
subjects in well under a second per cohort), :func:`write_clinical` to write the tables.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import date
from statistics import NormalDist
from pathlib import Path

import numpy as np
import pandas as pd

from workflow.settings import SyntheticCohortSettings

FORMATS = ("adni", "aibl", "nacc")
DIAGNOSES = ("CN", "MCI", "DE")
CN, MCI, DE = 0, 1, 2

# CN / MCI / DE shares of image-table pairs, and the paper's pair counts.
CLASS_MIX = {"adni": (0.31, 0.50, 0.19), "aibl": (0.73, 0.15, 0.12), "nacc": (0.52, 0.24, 0.24)}
PAPER_PAIRS = {"adni": 1689, "aibl": 1161, "nacc": 1611}

# Image severity in [0, 1] by diagnosis (drives atrophy), moved by the latent z and by time.
SEVERITY_BASE = (0.1, 0.45, 0.8)
SEVERITY_PER_Z = 0.1
SEVERITY_PER_YEAR = 0.03

# Disease course over follow-up [inferred]: share of subjects converting, per baseline diagnosis.
P_CN_TO_MCI = 0.2
P_MCI_TO_DE = 0.35
P_CN_MCI_THEN_DE = 0.25
STANDARD_NORMAL = NormalDist()
# Within-diagnosis decline of every score, in SDs per year (sign: towards worse).
DECLINE_SD_PER_YEAR = 0.05

# Visit schedules (months after baseline) and baseline-date eras per format.
SCHEDULE_MONTHS = {
    "adni": (0, 6, 12, 18, 24, 36, 48, 60, 72, 84, 96, 108, 120),
    "aibl": (0, 18, 36, 54, 72, 90, 108, 126),
    "nacc": tuple(range(0, 241, 12)),
}
VISIT_JITTER_DAYS = {"adni": 20, "aibl": 45, "nacc": 30}
BASELINE_ERA = {"adni": (date(2005, 9, 1), date(2018, 6, 30)), "aibl": (date(2006, 11, 1), date(2016, 6, 30))}
# NACC: UDS v3 started in March 2015; about 45 % of pairs are v3.
NACC_V3_START = date(2015, 3, 1)
NACC_V2_START = date(2008, 2, 1)
NACC_V3_SHARE = 0.45
NACC_ERA_V12 = (date(2005, 9, 1), date(2014, 6, 30))
NACC_ERA_V3 = (date(2015, 4, 1), date(2019, 12, 31))
# How far a scheduled MRI lies from its visit (never on the visit day).
MRI_OFFSET_DAYS = {"adni": 45, "aibl": 45, "nacc": 150}
# An unscheduled scan lies this many days after a visit; an unmatched one this long after the last visit.
UNSCHEDULED_OFFSET_DAYS = (60, 120)
UNMATCHED_OFFSET_DAYS = (200, 500)
DAYS_PER_MONTH = 30.4375

# Release-date suffixes of the native file names.
AIBL_RELEASE = "01-Jun-2018"
NACC_RELEASE = "66"
AIBL_TABLES = ("ptdemog", "pdxconv", "mmse", "cdr", "neurobat", "apoeres", "mrimeta")


@dataclass(frozen=True)
class Score:
    """Prior of one score: per-diagnosis mean and SD (CN, MCI, DE), bounds and rounding.

    ``direction`` is +1 when a higher value is worse, -1 when lower is worse, 0 when unrelated to
    severity; ``rho`` is the loading on the subject's latent severity; ``step`` rounds the value
    (1 = integer, 0.5 = half points, None = ``decimals`` places).
    """

    means: tuple[float, float, float]
    sds: tuple[float, float, float]
    low: float
    high: float
    direction: int = -1
    rho: float = 0.7
    step: float | None = 1
    decimals: int = 0


# Per-diagnosis score priors (published cohort figures where known, else estimates), keyed by native column name.
ADNI_SCORES = {
    "MMSE": Score((29.1, 27.6, 23.2), (1.1, 1.8, 2.1), 0, 30),
    "CDRSB": Score((0.03, 1.5, 4.4), (0.1, 0.9, 1.6), 0, 18, +1, step=0.5),
    "ADAS11": Score((5.8, 9.7, 19.5), (3.0, 4.5, 6.6), 0, 70, +1, step=None, decimals=2),
    "ADAS13": Score((9.0, 15.5, 30.0), (4.3, 6.6, 7.8), 0, 85, +1, step=None, decimals=2),
    "RAVLT_immediate": Score((44, 34, 23), (10, 10.5, 7.5), 0, 75),
    "RAVLT_learning": Score((5.8, 4.2, 1.8), (2.4, 2.6, 1.8), -5, 14),
    "RAVLT_forgetting": Score((3.8, 4.6, 4.4), (2.8, 2.6, 1.9), -5, 15, +1, rho=0.3),
    "FDG": Score((6.5, 6.2, 5.3), (0.55, 0.65, 0.7), 3.0, 9.0, rho=0.4, step=None, decimals=5),
}
# CSF values are censored at the assay limits and written as strings such as '>1700'.
ADNI_CSF = {
    "ABETA": (Score((1250, 1000, 650), (480, 470, 260), 200, 1700, -1, rho=0.4, step=None, decimals=1)),
    "TAU": (Score((240, 290, 370), (90, 125, 140), 80, 1300, +1, rho=0.4, step=None, decimals=1)),
    "PTAU": (Score((22, 28, 37), (9, 13, 14), 8, 120, +1, rho=0.4, step=None, decimals=2)),
}
AIBL_SCORES = {
    "MMSCORE": Score((28.7, 27.1, 20.4), (1.2, 2.1, 5.5), 0, 30),
    "LIMMTOTAL": Score((13.5, 8.5, 4.0), (3.5, 4.0, 3.5), 0, 25),
    "LDELTOTAL": Score((12.0, 5.5, 1.5), (3.8, 4.5, 2.5), 0, 25),
}
NACC_SCORES = {
    "NACCMMSE": Score((29.0, 26.8, 20.5), (1.3, 2.5, 5.7), 0, 30),
    "NACCMOCA": Score((26.8, 22.7, 15.4), (2.4, 3.4, 5.4), 0, 30),
    "CDRSUM": Score((0.05, 1.3, 5.8), (0.2, 0.9, 3.3), 0, 18, +1, step=0.5),
    "NACCGDS": Score((1.3, 2.5, 2.6), (1.8, 2.5, 2.5), 0, 15, +1, rho=0.2),
    "LOGIMEM": Score((13.0, 8.5, 4.0), (4.0, 4.2, 3.7), 0, 25),
    "MEMUNITS": Score((11.8, 6.0, 1.8), (4.2, 4.6, 2.8), 0, 25),
    "DIGIF": Score((8.3, 7.6, 6.6), (2.1, 2.1, 2.1), 0, 12, rho=0.5),
    "DIGIFLEN": Score((6.5, 6.2, 5.6), (1.1, 1.1, 1.1), 3, 8, rho=0.5),
    "DIGIB": Score((6.4, 5.5, 4.0), (2.1, 2.1, 2.1), 0, 12, rho=0.5),
    "DIGIBLEN": Score((4.7, 4.2, 3.4), (1.2, 1.2, 1.2), 2, 8, rho=0.5),
    "ANIMALS": Score((20.0, 15.5, 10.0), (5.5, 5.0, 5.0), 0, 77),
    "BOSTON": Score((27.0, 24.5, 19.0), (3.0, 4.5, 7.0), 0, 30),
    "TRAILA": Score((34, 45, 70), (13, 20, 38), 5, 150, +1),
    "TRAILB": Score((90, 140, 220), (45, 70, 75), 10, 300, +1),
    # UDS v3 replacements [prior, ours]: Craft Story 21 paraphrase units (immediate, delayed; 0-25),
    # number span (trials correct 0-14, longest span 3-9 forward, 2-8 backward), MINT (0-32).
    "CRAFTURS": Score((15.5, 12.0, 7.0), (4.0, 4.5, 4.5), 0, 25),
    "CRAFTDRE": Score((14.0, 9.5, 4.0), (4.0, 5.0, 4.5), 0, 25),
    "DIGFORCT": Score((8.2, 7.5, 6.3), (2.3, 2.3, 2.3), 0, 14, rho=0.5),
    "DIGFORSL": Score((6.5, 6.2, 5.5), (1.2, 1.2, 1.2), 3, 9, rho=0.5),
    "DIGBACCT": Score((7.0, 6.0, 4.5), (2.2, 2.2, 2.2), 0, 14, rho=0.5),
    "DIGBACLS": Score((4.8, 4.3, 3.5), (1.2, 1.2, 1.2), 2, 8, rho=0.5),
    "MINTTOTS": Score((30.0, 28.0, 23.0), (2.5, 3.5, 6.5), 0, 32),
}
NACC_V12_ONLY = ("NACCMMSE", "LOGIMEM", "MEMUNITS", "DIGIF", "DIGIFLEN", "DIGIB", "DIGIBLEN", "BOSTON")
NACC_V3_ONLY = ("NACCMOCA", "CRAFTURS", "CRAFTDRE", "DIGFORCT", "DIGFORSL", "DIGBACCT", "DIGBACLS", "MINTTOTS")


@dataclass(frozen=True)
class Demographics:
    """Per-diagnosis demographic priors (CN, MCI, DE) of one format."""

    age_mean: tuple[float, float, float]
    age_sd: tuple[float, float, float]
    male_share: tuple[float, float, float]
    apoe4_carrier: tuple[float, float, float]
    education_mean: tuple[float, float, float] | None = None
    education_sd: tuple[float, float, float] | None = None
    # Share of e4 carriers who are homozygous [prior].
    apoe4_homozygous: tuple[float, float, float] = (0.15, 0.2, 0.25)
    # Share with CDR global 0.5 among CN, and 0 among MCI; DE: mean and SD of a snapped normal.
    cdr_cn_half: float = 0.0
    cdr_mci_zero: float = 0.06
    cdr_de: tuple[float, float] = (0.77, 0.26)


DEMOGRAPHICS = {
    "adni": Demographics((74.3, 72.8, 74.9), (6.0, 7.7, 7.8), (0.489, 0.589, 0.55), (0.296, 0.472, 0.643),
                         (16.3, 15.9, 15.2), (2.7, 2.8, 3.0), cdr_cn_half=0.0, cdr_de=(0.77, 0.26)),
    "aibl": Demographics((72.5, 74.7, 73.3), (6.2, 7.1, 7.8), (0.423, 0.52, 0.418), (0.27, 0.45, 0.60),
                         cdr_cn_half=0.06, cdr_de=(0.93, 0.54)),
    "nacc": Demographics((69.8, 74.0, 75.0), (9.9, 8.7, 9.1), (0.345, 0.472, 0.455), (0.30, 0.387, 0.522),
                         (15.9, 15.4, 14.6), (3.0, 3.4, 3.6), cdr_cn_half=0.12, cdr_de=(1.02, 0.60)),
}

# Missingness. ADNI: per subject for CSF and FDG, per visit otherwise.
ADNI_MISSING_SUBJECT = {"CSF": 0.47, "FDG": 0.38}
ADNI_MISSING_SUBJECT_APOE4 = 0.02
ADNI_MISSING_VISIT = {"MMSE": 0.01, "ADAS11": 0.015, "ADAS13": 0.02, "RAVLT": 0.015}
AIBL_MISSING = {"LIMMTOTAL": 0.006, "LDELTOTAL": 0.011}
# NACC: per visit, rising with diagnosis (CN, MCI, DE; DE mixes AD and other dementias).
NACC_MISSING = {
    "NACCMMSE": (0.07, 0.06, 0.11), "NACCMOCA": (0.07, 0.06, 0.11),
    "LOGIMEM": (0.07, 0.07, 0.15), "MEMUNITS": (0.07, 0.07, 0.15),
    "CRAFTURS": (0.07, 0.07, 0.15), "CRAFTDRE": (0.07, 0.07, 0.15),
    "DIGIF": (0.07, 0.06, 0.14), "DIGIFLEN": (0.07, 0.06, 0.14), "DIGIB": (0.07, 0.06, 0.14),
    "DIGIBLEN": (0.07, 0.06, 0.14), "DIGFORCT": (0.07, 0.06, 0.14), "DIGFORSL": (0.07, 0.06, 0.14),
    "DIGBACCT": (0.07, 0.06, 0.14), "DIGBACLS": (0.07, 0.06, 0.14),
    "ANIMALS": (0.07, 0.06, 0.13), "NACCGDS": (0.07, 0.06, 0.13),
    "BOSTON": (0.08, 0.07, 0.15), "MINTTOTS": (0.08, 0.07, 0.15),
    "TRAILA": (0.07, 0.06, 0.19), "TRAILB": (0.08, 0.10, 0.38),
}
NACC_MISSING_SUBJECT = {"NACCNE4S": 0.15, "EDUC": 0.01, "RACE": 0.01, "HISPANIC": 0.01}
# NACC missing codes: which "not done" codes each column uses (docs/interfaces.md section 1).
NACC_NOT_DONE_CODES = {
    "NACCMMSE": (88, 95, 96, 97, 98), "NACCMOCA": (88,), "NACCGDS": (88,),
    "TRAILA": (995, 996, 997, 998), "TRAILB": (995, 996, 997, 998),
}
NACC_DEFAULT_NOT_DONE = (95, 96, 97, 98)
NACC_NOT_COLLECTED = -4
# Share of missing NACC cells coded -4 (not collected) rather than a "not done" code.
NACC_NOT_COLLECTED_SHARE = 0.2
NACC_RACE = {1: 0.84, 2: 0.12, 5: 0.02, 50: 0.02}
NACC_HISPANIC_SHARE = 0.08
AIBL_MISSING_CODE = -4

ADNI_SITES = (2, 3, 5, 6, 7, 9, 10, 11, 12, 13, 14, 16, 18, 19, 20, 21, 22, 23, 24, 27, 29, 31, 32, 33,
              35, 36, 37, 41, 51, 52, 53, 57, 62, 67, 68, 70, 72, 73, 82, 94, 98, 99, 100, 109, 114,
              116, 123, 126, 127, 128, 130, 131, 135, 136, 137, 141, 153, 941)
ADNI_PHASES = ((date(2009, 9, 1), "ADNI1"), (date(2011, 6, 1), "ADNIGO"), (date(2016, 9, 1), "ADNI2"),
               (date(2100, 1, 1), "ADNI3"))


@dataclass
class ClinicalCohort:
    """A planned synthetic cohort and its native tables.

    ``subjects``: one row per subject (``subject`` = BIDS label, ``source_id``, ``dx_baseline``,
    ``latent``, demographics...). ``visits``: one row per clinical visit (``subject``,
    ``visit_code``, ``visit_number``, ``visit_date``, ``dx`` 0/1/2, ``labelled``, ``severity``,
    drawn values). ``mris``: one row per MRI session (``subject``, ``session``, ``acq_date``,
    ``kind`` scheduled|unscheduled|unmatched, ``dx``, ``severity``, ``nearest_visit_days``,
    ``image`` path relative to the cohort root). ``tables``: native file path relative to the
    cohort root -> DataFrame, written as CSV by :func:`write_clinical`.
    """

    cohort: str
    fmt: str
    subjects: pd.DataFrame
    visits: pd.DataFrame
    mris: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def stable_hash(text: str) -> int:
    """A hash of ``text`` that is the same in every process (Python's ``hash`` is salted)."""
    return zlib.crc32(text.encode())


def cohort_rng(seed: int, cohort: str, *stream: str) -> np.random.Generator:
    """The generator of one stream (``"clinical"``, or a session) of one cohort and seed."""
    return np.random.default_rng([int(seed), stable_hash(cohort), *(stable_hash(s) for s in stream)])


def allocate(shares: list[float] | tuple[float, ...], total: int) -> np.ndarray:
    """Integer counts summing to ``total`` in proportion to ``shares`` (largest remainder)."""
    shares = np.asarray(shares, dtype=float) / float(np.sum(shares))
    exact = shares * total
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def class_counts(fmt: str, n_subjects: int, min_per_class: int) -> np.ndarray:
    """Subjects per baseline diagnosis (CN, MCI, DE): the class mix, raised to ``min_per_class``.

    Raising a class takes subjects from the largest one, so the total stays ``n_subjects``.
    """
    if min_per_class * 3 > n_subjects:
        raise ValueError(f"{n_subjects} subjects cannot hold {min_per_class} subjects of each of 3 classes")
    counts = allocate(CLASS_MIX[fmt], n_subjects)
    for k in range(3):
        while counts[k] < min_per_class:
            counts[int(np.argmax(counts))] -= 1
            counts[k] += 1
    return counts


def _to_date(day_number: int) -> date:
    return date.fromordinal(int(day_number))


def _uniform_day(rng: np.random.Generator, era: tuple[date, date]) -> int:
    return int(rng.integers(era[0].toordinal(), era[1].toordinal() + 1))


def _dx_at(days: float, t_mci: float, t_de: float, dx_baseline: int) -> int:
    """Diagnosis ``days`` after baseline given conversion times (inf = never)."""
    if dx_baseline == DE or days >= t_de:
        return DE
    if dx_baseline == MCI or days >= t_mci:
        return MCI
    return CN


def _session_label(fmt: str, month: int, acq: date) -> str:
    return f"D{acq:%Y%m%d}" if fmt == "nacc" else f"M{month:03d}"


def _visit_code(fmt: str, month: int, number: int) -> str:
    if fmt == "nacc":
        return str(number)
    return "bl" if month == 0 else f"m{month:02d}"


def plan_cohort(cohort: str, settings: SyntheticCohortSettings, rng: np.random.Generator) -> ClinicalCohort:
    """Subjects, visit schedules, disease course and MRI sessions (no score values yet).

    ``settings`` used: ``format``, ``subjects``, ``min_subjects_per_class``, ``mri_sessions_share``
    (share of subjects with 1, 2, 3... scheduled MRIs), ``follow_up_years`` ((min, max)),
    ``unscheduled_mri_share``, ``unmatched_mri_share``, ``unlabelled_visit_share``.
    """
    fmt, n_subjects = settings.format, int(settings.subjects)
    if fmt not in FORMATS:
        raise ValueError(f"unknown cohort format {fmt!r}; expected one of {FORMATS}")
    demo = DEMOGRAPHICS[fmt]
    counts = class_counts(fmt, n_subjects, int(settings.min_subjects_per_class))
    dx_baseline = rng.permutation(np.repeat(np.arange(3), counts))
    session_counts = rng.permutation(np.repeat(
        np.arange(1, len(settings.mri_sessions_share) + 1), allocate(settings.mri_sessions_share, n_subjects)))
    ids = _native_ids(fmt, n_subjects, rng)
    follow_min, follow_max = settings.follow_up_years
    months = np.asarray(SCHEDULE_MONTHS[fmt])
    n_extra = {"unscheduled": _at_least_one(settings.unscheduled_mri_share, n_subjects),
               "unmatched": _at_least_one(settings.unmatched_mri_share, n_subjects)}
    if fmt == "nacc":
        n_extra["unscheduled"] = 0  # NACC MRI sessions carry no visit code: every one is aligned by date
    extra_subjects = {kind: set(rng.choice(n_subjects, size=n, replace=False).tolist()) for kind, n in n_extra.items()}

    subjects, visits, mris = [], [], []
    for index in range(n_subjects):
        dx0 = int(dx_baseline[index])
        latent = float(rng.standard_normal())
        if fmt == "nacc":
            v3_era = bool(rng.random() < NACC_V3_SHARE)
            baseline = _uniform_day(rng, NACC_ERA_V3 if v3_era else NACC_ERA_V12)
        else:
            baseline = _uniform_day(rng, BASELINE_ERA[fmt])
        age = float(np.clip(rng.normal(demo.age_mean[dx0], demo.age_sd[dx0]), 55 if fmt != "nacc" else 45, 95))
        education = None
        if demo.education_mean is not None:
            education = int(np.clip(np.round(rng.normal(demo.education_mean[dx0], demo.education_sd[dx0])), 6, 20))
        carrier = rng.random() < demo.apoe4_carrier[dx0]
        apoe4 = (2 if rng.random() < demo.apoe4_homozygous[dx0] else 1) if carrier else 0
        follow_days = rng.uniform(follow_min, follow_max) * 365.25
        # Enough visits for the scheduled MRIs (each sits near its own visit).
        n_visits = max(int(np.sum(months * DAYS_PER_MONTH <= follow_days)), int(session_counts[index]), 1)
        n_visits = min(n_visits, len(months))
        t_mci, t_de = np.inf, np.inf
        span = float(months[n_visits - 1] * DAYS_PER_MONTH)
        if dx0 == CN and rng.random() < P_CN_TO_MCI and span > 0:
            t_mci = rng.uniform(0.3, 1.0) * span
            if rng.random() < P_CN_MCI_THEN_DE:
                t_de = t_mci + rng.uniform(0.3, 1.0) * (span - t_mci)
        elif dx0 == MCI and rng.random() < P_MCI_TO_DE and span > 0:
            t_de = rng.uniform(0.3, 1.0) * span
        subject = ids["subject"][index]
        subjects.append({
            "subject": subject, "source_id": ids["source_id"][index], "rid": ids["rid"][index],
            "site": ids["site"][index], "dx_baseline": dx0, "latent": latent, "age_baseline": round(age, 1),
            "male": bool(rng.random() < demo.male_share[dx0]), "education": education, "apoe4": apoe4,
            "baseline_date": _to_date(baseline).isoformat(), "mci_after_days": t_mci, "de_after_days": t_de,
        })
        jitter = VISIT_JITTER_DAYS[fmt]
        visit_days = [baseline] + [
            baseline + int(round(m * DAYS_PER_MONTH)) + int(rng.integers(-jitter, jitter + 1))
            for m in months[1:n_visits]]
        subject_visits = []
        for number, (month, day) in enumerate(zip(months[:n_visits], visit_days), start=1):
            since = day - baseline
            dx = _dx_at(since, t_mci, t_de, dx0)
            subject_visits.append({
                "subject": subject, "visit_number": number, "visit_code": _visit_code(fmt, int(month), number),
                "month": int(month), "visit_day": day, "visit_date": _to_date(day).isoformat(),
                "years_since_baseline": since / 365.25, "dx": dx, "labelled": True,
                "severity": _severity(dx, latent, since / 365.25),
            })
        visits.extend(subject_visits)
        mris.extend(_plan_mris(fmt, subject, subject_visits, int(session_counts[index]), baseline, latent,
                               (t_mci, t_de, dx0), index in extra_subjects["unscheduled"],
                               index in extra_subjects["unmatched"], rng))
    visits_df = pd.DataFrame(visits)
    _mark_unlabelled(visits_df, float(settings.unlabelled_visit_share), rng)
    mris_df = pd.DataFrame(mris)
    mris_df["nearest_visit_days"] = [
        _nearest_visit_offset(day, visits_df.loc[visits_df["subject"] == s, "visit_day"].to_numpy())
        for s, day in zip(mris_df["subject"], mris_df["acq_day"])]
    return ClinicalCohort(cohort, fmt, pd.DataFrame(subjects), visits_df, mris_df)


def _at_least_one(share: float, n: int) -> int:
    """How many subjects get a feature of this share: at least one whenever the share is positive."""
    return 0 if share <= 0 else min(n, max(1, int(round(share * n))))


def _severity(dx: int, latent: float, years: float) -> float:
    return float(np.clip(SEVERITY_BASE[dx] + SEVERITY_PER_Z * latent + SEVERITY_PER_YEAR * years, 0.0, 1.0))


def _native_ids(fmt: str, n: int, rng: np.random.Generator) -> dict[str, list]:
    """Unique native ids and BIDS participant labels (PTID/RID, RID, NACCID)."""
    if fmt == "adni":
        rids = rng.choice(np.arange(1, 10000), size=n, replace=False)
        sites = rng.choice(ADNI_SITES, size=n)
        return {"rid": rids.tolist(), "site": sites.tolist(),
                "source_id": [f"{s:03d}_S_{r:04d}" for s, r in zip(sites, rids)],
                "subject": [f"ADNI{s:03d}S{r:04d}" for s, r in zip(sites, rids)]}
    if fmt == "aibl":
        rids = rng.choice(np.arange(1, 3000), size=n, replace=False)
        sites = rng.choice([1, 2], size=n, p=[0.65, 0.35])
        return {"rid": rids.tolist(), "site": sites.tolist(), "source_id": [str(r) for r in rids],
                "subject": [f"AIBL{r}" for r in rids]}
    numbers = rng.choice(np.arange(100000, 1000000), size=n, replace=False)
    naccids = [f"NACC{k}" for k in numbers]
    return {"rid": numbers.tolist(), "site": [0] * n, "source_id": naccids, "subject": naccids}


def _plan_mris(fmt: str, subject: str, visits: list[dict], n_scheduled: int, baseline: int, latent: float,
               course: tuple[float, float, int], unscheduled: bool, unmatched: bool,
               rng: np.random.Generator) -> list[dict]:
    """MRI sessions of one subject: scheduled ones near visits (the first near baseline), plus an
    unscheduled one (ADNI/AIBL: label matching no visit code, within 6 months of a visit) and an
    unmatched one (no visit within 6 months) when asked."""
    t_mci, t_de, dx0 = course
    chosen = [0] + sorted(rng.choice(np.arange(1, len(visits)), size=n_scheduled - 1, replace=False).tolist())
    visit_months = {v["month"] for v in visits}
    visit_days = {v["visit_day"] for v in visits}
    plans = []
    taken_days: set[int] = set()
    for k in chosen:
        visit = visits[k]
        offset = int(rng.integers(1, MRI_OFFSET_DAYS[fmt] + 1)) * int(rng.choice([-1, 1]))
        plans.append(("scheduled", visit["visit_day"] + offset, visit["month"]))
    if unscheduled:
        anchor = visits[int(rng.integers(0, len(visits)))]
        day = anchor["visit_day"] + int(rng.integers(*UNSCHEDULED_OFFSET_DAYS))
        plans.append(("unscheduled", day, None))
    if unmatched:
        day = visits[-1]["visit_day"] + int(rng.integers(*UNMATCHED_OFFSET_DAYS))
        plans.append(("unmatched", day, None))
    mris = []
    for kind, day, month in plans:
        if month is None:
            # Off-schedule sessions are labelled by months since baseline; move the date until
            # the label matches none of the subject's visit codes and no other session.
            while True:
                month = int(round((day - baseline) / DAYS_PER_MONTH))
                if month not in visit_months and day not in taken_days | visit_days and month >= 0:
                    break
                day += 20
        while day in taken_days:
            day += 1
        taken_days.add(day)
        acq = _to_date(day)
        since = day - baseline
        dx = _dx_at(since, t_mci, t_de, dx0)
        mris.append({"subject": subject, "session": _session_label(fmt, month, acq), "acq_day": day,
                     "acq_date": acq.isoformat(), "kind": kind, "dx": dx,
                     "severity": _severity(dx, latent, since / 365.25)})
    return sorted(mris, key=lambda m: m["acq_day"])


def _nearest_visit_offset(day: int, visit_days: np.ndarray) -> int:
    """Signed days from the nearest visit to the MRI (negative: the MRI came first)."""
    offsets = day - visit_days
    return int(offsets[np.argmin(np.abs(offsets))])


def _mark_unlabelled(visits: pd.DataFrame, share: float, rng: np.random.Generator) -> None:
    """Give a share of follow-up visits (never a baseline) no usable label."""
    follow_up = np.flatnonzero(visits["visit_number"].to_numpy() > 1)
    n = min(len(follow_up), _at_least_one(share, len(follow_up)))
    if n:
        visits.loc[visits.index[rng.choice(follow_up, size=n, replace=False)], "labelled"] = False


# --- values ---------------------------------------------------------------------------------------

def draw_scores(scores: dict[str, Score], subjects: pd.DataFrame, visits: pd.DataFrame,
                rng: np.random.Generator) -> pd.DataFrame:
    """One column per score for every visit, from the diagnosis at the visit and the latent severity.

    value = mean[dx] + sd[dx] * (direction * rho * z + sqrt(1 - rho^2) * (0.8 u + 0.6 e)) + decline,
    with z the subject's latent, u a per-subject offset of this score and e per-visit noise, so the
    marginal per diagnosis is N(mean, sd) before clipping and rounding. Returns floats (no NaN).
    """
    latent = _per_visit_latent(subjects, visits)
    subject_codes, subject_index = np.unique(visits["subject"].to_numpy(), return_inverse=True)
    dx = visits["dx"].to_numpy()
    years = visits["years_since_baseline"].to_numpy()
    out = {}
    for name, score in scores.items():
        own = rng.standard_normal(len(subject_codes))[subject_index]
        noise = rng.standard_normal(len(visits))
        direction = score.direction if score.direction else 1
        unit = (direction * score.rho * latent
                + np.sqrt(1 - score.rho ** 2) * (0.8 * own + 0.6 * noise)
                + direction * DECLINE_SD_PER_YEAR * years * (score.direction != 0))
        value = np.asarray(score.means)[dx] + np.asarray(score.sds)[dx] * unit
        out[name] = round_score(value, score)
    return pd.DataFrame(out, index=visits.index)


def round_score(value: np.ndarray, score: Score) -> np.ndarray:
    """Clip to the score's bounds and round to its step (integers, half points) or decimals."""
    value = np.clip(value, score.low, score.high)
    if score.step is not None:
        return np.round(value / score.step) * score.step
    return np.round(value, score.decimals)


def draw_cdr_global(demo: Demographics, latent: np.ndarray, dx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CDR global (0, 0.5, 1, 2, 3) per visit, moving with the latent severity."""
    unit = 0.7 * latent + np.sqrt(1 - 0.49) * rng.standard_normal(len(dx))
    cdr = np.zeros(len(dx))
    cdr[(dx == CN) & (unit > STANDARD_NORMAL.inv_cdf(1 - demo.cdr_cn_half))] = 0.5 if demo.cdr_cn_half > 0 else 0.0
    cdr[dx == MCI] = np.where(unit[dx == MCI] < STANDARD_NORMAL.inv_cdf(demo.cdr_mci_zero), 0.0, 0.5)
    levels = np.array([0.5, 1.0, 2.0, 3.0])
    continuous = demo.cdr_de[0] + demo.cdr_de[1] * unit[dx == DE]
    cdr[dx == DE] = levels[np.argmin(np.abs(continuous[:, None] - levels[None, :]), axis=1)]
    return cdr


def _per_visit_latent(subjects: pd.DataFrame, visits: pd.DataFrame) -> np.ndarray:
    return visits["subject"].map(subjects.set_index("subject")["latent"]).to_numpy()


def _format_number(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


# --- ADNI -----------------------------------------------------------------------------------------

ADNIMERGE_COLUMNS = [
    "RID", "PTID", "VISCODE", "SITE", "COLPROT", "ORIGPROT", "EXAMDATE", "DX_bl", "AGE", "PTGENDER",
    "PTEDUCAT", "PTETHCAT", "PTRACCAT", "PTMARRY", "APOE4", "FDG", "ABETA", "TAU", "PTAU", "CDRSB",
    "ADAS11", "ADAS13", "MMSE", "RAVLT_immediate", "RAVLT_learning", "RAVLT_forgetting", "DX",
    "Years_bl", "Month_bl", "Month", "M",
]


def _adni_phase(day: date) -> str:
    return next(name for end, name in ADNI_PHASES if day < end)


def adni_tables(cohort: ClinicalCohort, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """``clinical/ADNIMERGE.csv``: one row per RID x VISCODE, missing = empty cell."""
    subjects, visits = cohort.subjects.set_index("subject"), cohort.visits
    values = draw_scores(ADNI_SCORES, cohort.subjects, visits, rng)
    # ADAS13 contains the ADAS11 items, so it is never below ADAS11.
    values["ADAS13"] = np.maximum(values["ADAS13"], values["ADAS11"])
    csf = draw_scores(ADNI_CSF, cohort.subjects, visits, rng)
    no_csf = set(subjects.index[rng.random(len(subjects)) < ADNI_MISSING_SUBJECT["CSF"]])
    no_fdg = set(subjects.index[rng.random(len(subjects)) < ADNI_MISSING_SUBJECT["FDG"]])
    no_apoe = set(subjects.index[rng.random(len(subjects)) < ADNI_MISSING_SUBJECT_APOE4])
    dx_bl_mci = {s: ("EMCI" if rng.random() < 0.5 else "LMCI") for s in subjects.index}
    ethnicity = {s: ("Hisp/Latino" if rng.random() < 0.04 else "Not Hisp/Latino") for s in subjects.index}
    race = {s: str(rng.choice(["White", "Black", "Asian", "More than one"], p=[0.92, 0.05, 0.02, 0.01]))
            for s in subjects.index}
    married = {s: str(rng.choice(["Married", "Widowed", "Divorced", "Never married"], p=[0.75, 0.12, 0.09, 0.04]))
               for s in subjects.index}
    rows = []
    for i, visit in enumerate(visits.to_dict("records")):
        s = visit["subject"]
        info = subjects.loc[s]
        day = date.fromisoformat(visit["visit_date"])
        baseline = date.fromisoformat(info["baseline_date"])
        since = (day - baseline).days
        dx_bl = ("CN", dx_bl_mci[s], "AD")[int(info["dx_baseline"])]
        row = {
            "RID": int(info["rid"]), "PTID": info["source_id"], "VISCODE": visit["visit_code"],
            "SITE": int(info["site"]), "COLPROT": _adni_phase(day), "ORIGPROT": _adni_phase(baseline),
            "EXAMDATE": visit["visit_date"], "DX_bl": dx_bl, "AGE": f"{info['age_baseline']:.1f}",
            "PTGENDER": "Male" if info["male"] else "Female", "PTEDUCAT": int(info["education"]),
            "PTETHCAT": ethnicity[s], "PTRACCAT": race[s], "PTMARRY": married[s],
            "APOE4": "" if s in no_apoe else f"{int(info['apoe4'])}",
            "FDG": "" if s in no_fdg else _format_number(values["FDG"].iloc[i], 5),
            "CDRSB": f"{values['CDRSB'].iloc[i]:.1f}",
            "DX": ("CN", "MCI", "Dementia")[visit["dx"]] if visit["labelled"] else "",
            "Years_bl": f"{since / 365.25:.6f}", "Month_bl": f"{since / DAYS_PER_MONTH:.5f}",
            "Month": str(visit["month"]), "M": str(visit["month"]),
        }
        for name, spec in ADNI_CSF.items():
            row[name] = "" if s in no_csf else censored(csf[name].iloc[i], spec)
        for name in ("ADAS11", "ADAS13"):
            missing = rng.random() < ADNI_MISSING_VISIT[name]
            row[name] = "" if missing else _format_number(values[name].iloc[i], 2)
        row["MMSE"] = "" if rng.random() < ADNI_MISSING_VISIT["MMSE"] else f"{int(values['MMSE'].iloc[i])}"
        ravlt_missing = rng.random() < ADNI_MISSING_VISIT["RAVLT"]
        for name in ("RAVLT_immediate", "RAVLT_learning", "RAVLT_forgetting"):
            row[name] = "" if ravlt_missing else f"{int(values[name].iloc[i])}"
        rows.append(row)
    table = pd.DataFrame(rows, columns=ADNIMERGE_COLUMNS)
    order = np.lexsort((visits["visit_day"].to_numpy(), table["RID"].to_numpy()))
    return {"clinical/ADNIMERGE.csv": table.iloc[order].reset_index(drop=True)}


def censored(value: float, spec: Score) -> str:
    """A CSF value as ADNIMERGE writes it: a number, or '<low' / '>high' at the assay limits."""
    if value <= spec.low:
        return f"<{spec.low:g}"
    if value >= spec.high:
        return f">{spec.high:g}"
    return _format_number(value, spec.decimals)


# --- AIBL -----------------------------------------------------------------------------------------

def _aibl_date(iso: str) -> str:
    return date.fromisoformat(iso).strftime("%m/%d/%Y")


def aibl_tables(cohort: ClinicalCohort, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """The ``clinical/aibl_<table>_<release>.csv`` set, missing = -4."""
    subjects, visits = cohort.subjects, cohort.visits
    info = subjects.set_index("subject")
    values = draw_scores(AIBL_SCORES, subjects, visits, rng)
    cdr = draw_cdr_global(DEMOGRAPHICS["aibl"], _per_visit_latent(subjects, visits), visits["dx"].to_numpy(), rng)
    key = pd.DataFrame({
        "RID": visits["subject"].map(info["rid"]).astype(int).to_numpy(),
        "SITEID": visits["subject"].map(info["site"]).astype(int).to_numpy(),
        "VISCODE": visits["visit_code"].to_numpy(),
    })
    exam = visits["visit_date"].map(_aibl_date).to_numpy()
    birth_year = [date.fromisoformat(d).year - int(np.floor(a))
                  for d, a in zip(subjects["baseline_date"], subjects["age_baseline"])]
    demog = pd.DataFrame({"RID": subjects["rid"].astype(int), "SITEID": subjects["site"].astype(int), "VISCODE": "bl",
                          "PTGENDER": np.where(subjects["male"], 1, 2), "PTDOB": [f"/{y}" for y in birth_year]})
    apoe = []
    for e4 in subjects["apoe4"]:
        other = int(rng.choice([2, 3], p=[0.1, 0.9]))
        apoe.append({0: (other, 3), 1: (3 if other == 3 else 2, 4), 2: (4, 4)}[int(e4)])
    apoeres = pd.DataFrame({"RID": subjects["rid"].astype(int), "SITEID": subjects["site"].astype(int), "VISCODE": "bl",
                            "APGEN1": [a[0] for a in apoe], "APGEN2": [a[1] for a in apoe]})
    dx = np.where(visits["labelled"].to_numpy(), visits["dx"].to_numpy() + 1, AIBL_MISSING_CODE)
    neuro = {}
    for name in ("LIMMTOTAL", "LDELTOTAL"):
        column = values[name].astype(int).to_numpy()
        neuro[name] = np.where(rng.random(len(column)) < AIBL_MISSING[name], AIBL_MISSING_CODE, column)
    mris = cohort.mris
    mri_info = mris["subject"].map(info["rid"]).astype(int).to_numpy()
    mrimeta = pd.DataFrame({
        "RID": mri_info, "SITEID": mris["subject"].map(info["site"]).astype(int).to_numpy(),
        "VISCODE": [("bl" if s == "M000" else f"m{int(s[1:]):02d}") for s in mris["session"]],
        "EXAMDATE": mris["acq_date"].map(_aibl_date).to_numpy(), "MMCONDCT": 1,
    })
    tables = {
        "ptdemog": demog,
        "pdxconv": key.assign(DXCURREN=dx),
        "mmse": key.assign(EXAMDATE=exam, MMSCORE=values["MMSCORE"].astype(int).to_numpy()),
        "cdr": key.assign(EXAMDATE=exam, CDGLOBAL=cdr),
        "neurobat": key.assign(EXAMDATE=exam, **neuro),
        "apoeres": apoeres,
        "mrimeta": mrimeta,
    }
    return {f"clinical/aibl_{name}_{AIBL_RELEASE}.csv": table.sort_values(["RID"], kind="stable").reset_index(drop=True)
            for name, table in tables.items()}


# --- NACC -----------------------------------------------------------------------------------------

NACC_UDS_COLUMNS = [
    "NACCID", "NACCVNUM", "VISITYR", "VISITMO", "VISITDAY", "FORMVER", "NACCUDSD", "NACCAGE", "SEX", "EDUC",
    "RACE", "HISPANIC", "NACCNE4S", "NACCMMSE", "NACCMOCA", "CDRGLOB", "CDRSUM", "NACCGDS", "LOGIMEM",
    "MEMUNITS", "DIGIF", "DIGIFLEN", "DIGIB", "DIGIBLEN", "ANIMALS", "BOSTON", "TRAILA", "TRAILB",
    "CRAFTURS", "CRAFTDRE", "DIGFORCT", "DIGFORSL", "DIGBACCT", "DIGBACLS", "MINTTOTS",
]
NACC_MRI_COLUMNS = ["NACCID", "NACCMNUM", "MRIYR", "MRIMO", "MRIDY", "NACCMRFI", "MRIT1", "NACCMRIA", "NACCMRDY",
                    "NACCVNUM", "NACCNIFT"]


def nacc_form_version(day: date) -> int:
    """UDS form version in use on ``day`` (v2 from February 2008, v3 from March 2015)."""
    return 3 if day >= NACC_V3_START else (2 if day >= NACC_V2_START else 1)


def nacc_tables(cohort: ClinicalCohort, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """``clinical/investigator_nacc<NN>.csv`` (UDS visits) and ``clinical/investigator_mri_nacc<NN>.csv``."""
    subjects, visits = cohort.subjects, cohort.visits
    info = subjects.set_index("subject")
    values = draw_scores(NACC_SCORES, subjects, visits, rng)
    dx = visits["dx"].to_numpy()
    cdr = draw_cdr_global(DEMOGRAPHICS["nacc"], _per_visit_latent(subjects, visits), dx, rng)
    days = [date.fromisoformat(d) for d in visits["visit_date"]]
    version = np.array([nacc_form_version(d) for d in days])
    race_codes = list(NACC_RACE)
    static = {
        s: {"RACE": int(rng.choice(race_codes, p=list(NACC_RACE.values()))),
            "HISPANIC": int(rng.random() < NACC_HISPANIC_SHARE),
            **{f"missing_{name}": rng.random() < share for name, share in NACC_MISSING_SUBJECT.items()}}
        for s in subjects["subject"]}
    table = pd.DataFrame({
        "NACCID": visits["subject"].to_numpy(), "NACCVNUM": visits["visit_number"].to_numpy(),
        "VISITYR": [d.year for d in days], "VISITMO": [d.month for d in days], "VISITDAY": [d.day for d in days],
        "FORMVER": version,
        "NACCUDSD": np.where(visits["labelled"].to_numpy(), np.array([1, 3, 4])[dx], 2),
    })
    baseline = visits["subject"].map(info["baseline_date"]).map(date.fromisoformat)
    age0 = visits["subject"].map(info["age_baseline"]).to_numpy()
    table["NACCAGE"] = np.floor(age0 + np.array([(d - b).days / 365.25 for d, b in zip(days, baseline)])).astype(int)
    table["SEX"] = np.where(visits["subject"].map(info["male"]).to_numpy(), 1, 2)
    subject_ids = visits["subject"].to_numpy()

    def subject_column(name: str, value_of, missing_code: int) -> np.ndarray:
        return np.array([missing_code if static[s][f"missing_{name}"] else value_of(s) for s in subject_ids])

    table["EDUC"] = subject_column("EDUC", lambda s: int(info.at[s, "education"]), 99)
    table["RACE"] = subject_column("RACE", lambda s: static[s]["RACE"], 99)
    table["HISPANIC"] = subject_column("HISPANIC", lambda s: static[s]["HISPANIC"], 9)
    table["NACCNE4S"] = subject_column("NACCNE4S", lambda s: int(info.at[s, "apoe4"]), 9)
    table["CDRGLOB"] = cdr
    for name in NACC_SCORES:
        column = values[name].to_numpy().astype(float)
        if name in NACC_V3_ONLY:
            collected = version == 3
        elif name in NACC_V12_ONLY:
            collected = version < 3
        else:
            collected = np.ones(len(version), dtype=bool)
        rates = np.asarray(NACC_MISSING.get(name, (0.0, 0.0, 0.0)))[dx]
        missing = rng.random(len(column)) < rates
        codes = NACC_NOT_DONE_CODES.get(name, NACC_DEFAULT_NOT_DONE)
        missing_code = np.where(rng.random(len(column)) < NACC_NOT_COLLECTED_SHARE, NACC_NOT_COLLECTED,
                                rng.choice(codes, size=len(column)))
        column = np.where(missing & collected, missing_code, column)
        table[name] = np.where(collected, column, NACC_NOT_COLLECTED)
    for name in NACC_SCORES:
        if NACC_SCORES[name].step == 1:  # whole-number scores and codes are written without decimals
            table[name] = table[name].astype(int)
    table = table[NACC_UDS_COLUMNS]

    mris = cohort.mris.copy()
    mri_days = [date.fromisoformat(d) for d in mris["acq_date"]]
    mris["NACCMNUM"] = mris.groupby("subject").cumcount() + 1
    by_subject = {s: group for s, group in visits.groupby("subject")}
    nearest_number = []
    for s, day in zip(mris["subject"], mris["acq_day"]):
        group = by_subject[s]
        nearest = np.argmin(np.abs(group["visit_day"].to_numpy() - day))
        nearest_number.append(int(group["visit_number"].to_numpy()[nearest]))
    mri_age = [int(np.floor(info.at[s, "age_baseline"]
                            + (d - date.fromisoformat(info.at[s, "baseline_date"])).days / 365.25))
               for s, d in zip(mris["subject"], mri_days)]
    mri_table = pd.DataFrame({
        "NACCID": mris["subject"].to_numpy(), "NACCMNUM": mris["NACCMNUM"].to_numpy(),
        "MRIYR": [d.year for d in mri_days], "MRIMO": [d.month for d in mri_days], "MRIDY": [d.day for d in mri_days],
        "NACCMRFI": [Path(p).name.replace(".nii.gz", ".zip") for p in mris["image"]], "MRIT1": 1,
        "NACCMRIA": mri_age, "NACCMRDY": mris["nearest_visit_days"].to_numpy(), "NACCVNUM": nearest_number,
        "NACCNIFT": 1,
    }, columns=NACC_MRI_COLUMNS)
    return {f"clinical/investigator_nacc{NACC_RELEASE}.csv": table,
            f"clinical/investigator_mri_nacc{NACC_RELEASE}.csv": mri_table}


# --- entry points ---------------------------------------------------------------------------------

def image_paths(fmt: str, mris: pd.DataFrame, rng: np.random.Generator) -> list[str]:
    """Where each session's T1w goes, relative to the cohort root (BIDS, or the NACC images folder)."""
    if fmt == "nacc":
        numbers = rng.choice(np.arange(1000, 100000), size=len(mris), replace=False)
        return [f"images/mri{n}ni.nii.gz" for n in numbers]
    return [f"bids/sub-{s}/ses-{t}/anat/sub-{s}_ses-{t}_T1w.nii.gz" for s, t in zip(mris["subject"], mris["session"])]


def generate_clinical(cohort: str, settings: SyntheticCohortSettings) -> ClinicalCohort:
    """Plan ``cohort`` and draw its native clinical tables (no volumes, nothing written).

    ``settings``: the cohort's (``workflow.settings.synthetic_cohort_settings``): ``seed``,
    ``format``, ``subjects`` and the planning settings of :func:`plan_cohort`.
    """
    rng = cohort_rng(settings.seed, cohort, "clinical")
    planned = plan_cohort(cohort, settings, rng)
    fmt = settings.format
    planned.mris["image"] = image_paths(fmt, planned.mris, rng)
    writer = {"adni": adni_tables, "aibl": aibl_tables, "nacc": nacc_tables}[fmt]
    planned.tables = writer(planned, rng)
    return planned


def write_clinical(cohort: ClinicalCohort, out_dir: Path) -> list[Path]:
    """Write the native tables under ``out_dir`` (the cohort root); returns the files written."""
    written = []
    for relative, table in cohort.tables.items():
        path = Path(out_dir) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False, lineterminator="\n")
        written.append(path)
    return written
