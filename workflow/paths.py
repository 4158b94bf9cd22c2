"""Every file that one stage writes and another stage reads, in one place.

Patterns use Snakemake wildcard syntax, so rules use them directly and Python code fills them
with ``str.format``. The key shared by every stage is ``(cohort, subject, session)``:

* ``cohort``: the name used in ``config.yaml`` (ADNI, AIBL, NACC or a user's own).
* ``subject``: a BIDS participant label without ``sub-`` (``ADNI027S0074``, ``AIBL123``,
  ``NACC123456``); the cohort's native id (PTID, RID, NACCID) travels beside it as ``source_id``.
* ``session``: a BIDS session label without ``ses-`` (``M000``, ``M018``, or ``D20150412`` when a
  session is known only by its date).

Paths are relative to the Snakemake working directory.
"""

from __future__ import annotations

RESULTS = "results"

# --- synthesize: native files of a synthetic cohort, laid out as a real user holds them ---------
SYNTHETIC_ROOT = "results/synthetic/{cohort}"
# Ground truth written beside the synthetic data (pose, brain mask) for QC checks.
SYNTHETIC_TRUTH_DIR = "results/synthetic/{cohort}/truth"
# The same cohort written as the data centre ships it (LONI image folders of DICOM, NACC zips).
SYNTHETIC_RAW_ROOT = "results/synthetic_raw/{cohort}"

# --- convert: a raw download (the data centre's files) -> what intake reads ----------------------
# ADNI / AIBL: Clinica's BIDS tree; NACC: one NIfTI per MRI session zip.
CONVERT_DIR = "results/convert/{cohort}"
CONVERTED_BIDS = "results/convert/{cohort}/bids"
CONVERTED_NIFTI = "results/convert/{cohort}/images"
CONVERT_EXCLUSIONS = "results/convert/{cohort}/exclusions.tsv"

# --- intake: one images table and one visits table per cohort ------------------------------------
INTAKE_IMAGES = "results/intake/{cohort}/images.tsv"
INTAKE_VISITS = "results/intake/{cohort}/visits.tsv"
INTAKE_EXCLUSIONS = "results/intake/{cohort}/exclusions.tsv"
# Cells that were unreadable and became missing values (the visit itself was kept).
INTAKE_CELL_QC = "results/intake/{cohort}/cell_qc.tsv"

# --- preprocess: CAPS-style per-image outputs, then per-cohort QC --------------------------------
PREPROCESS_SESSION_DIR = "results/preprocess/{cohort}/subjects/sub-{subject}/ses-{session}"
MODEL_READY_VOLUME = (
    "results/preprocess/{cohort}/subjects/sub-{subject}/ses-{session}/model_ready/"
    "sub-{subject}_ses-{session}_desc-modelready_T1w.npy"
)
# One per-image step's files for a batch of a cohort's images, and the batch's outcomes.tsv
# ({step}: n4, registration, skullstrip, model_ready; workflow/preprocess_batch.py).
PREPROCESS_BATCH = "results/preprocess/{cohort}/{step}/batch-{batch}"
# One per-image step's settings ({step}: n4, registration, skullstrip, model_ready), read by its jobs.
PREPROCESS_STEP_SETTINGS = "results/preprocess/settings/{step}.json"
PREPROCESS_QC = "results/preprocess/{cohort}/qc.tsv"
PREPROCESS_EXCLUSIONS = "results/preprocess/{cohort}/exclusions.tsv"
PREPROCESS_MOSAIC_DIR = "results/preprocess/{cohort}/mosaics"

# --- tables: the model-ready clinical table of a cohort ------------------------------------------
TABLE = "results/tables/{cohort}/table.tsv"
TABLE_COLUMNS = "results/tables/{cohort}/columns.yaml"
TABLE_STATS = "results/tables/{cohort}/stats.json"
TABLE_SPLIT = "results/tables/{cohort}/split.tsv"
TABLE_EXCLUSIONS = "results/tables/{cohort}/exclusions.tsv"
TABLE_SUMMARY = "results/tables/{cohort}/summary.json"
TABLE_SUMMARY_MD = "results/tables/{cohort}/summary.md"

# --- headers: frozen text-encoder vectors of every column header ---------------------------------
HEADER_BANK = "results/headers/{encoder}.safetensors"
HEADER_SIMILARITY = "results/headers/{encoder}.similarity.json"

# --- training -------------------------------------------------------------------------------------
# Each training and evaluation job's record (workflow.provenance), beside its outputs.
PROVENANCE_NAME = "provenance.json"
PRETRAIN_DIR = "results/pretrain/{variant}"
PRETRAINED_WEIGHTS = "results/pretrain/{variant}/model.safetensors"
# The self-supervised Table 1 baselines (MMCL, TIP, ViTa) pretrain on one cohort at a time.
COHORT_PRETRAIN_DIR = "results/pretrain/{variant}/{cohort}"
COHORT_PRETRAINED_WEIGHTS = "results/pretrain/{variant}/{cohort}/model.safetensors"
FINETUNE_DIR = "results/finetune/{variant}/{cohort}/seed-{seed}"
FINETUNED_WEIGHTS = "results/finetune/{variant}/{cohort}/seed-{seed}/best.safetensors"
EVAL_METRICS = "results/eval/{variant}/{cohort}/seed-{seed}/metrics.json"
EVAL_PREDICTIONS = "results/eval/{variant}/{cohort}/seed-{seed}/predictions.tsv"
PRETRAIN_PROVENANCE = f"{PRETRAIN_DIR}/{PROVENANCE_NAME}"
COHORT_PRETRAIN_PROVENANCE = f"{COHORT_PRETRAIN_DIR}/{PROVENANCE_NAME}"
FINETUNE_PROVENANCE = f"{FINETUNE_DIR}/{PROVENANCE_NAME}"
EVAL_PROVENANCE = f"results/eval/{{variant}}/{{cohort}}/seed-{{seed}}/{PROVENANCE_NAME}"
# Each training job's settings (workflow.settings), written from its rule's params before it runs.
PRETRAIN_SETTINGS = f"{PRETRAIN_DIR}/settings.json"
COHORT_PRETRAIN_SETTINGS = f"{COHORT_PRETRAIN_DIR}/settings.json"
FINETUNE_SETTINGS = f"{FINETUNE_DIR}/settings.json"
EVAL_SETTINGS = "results/eval/{variant}/{cohort}/seed-{seed}/settings.json"

# --- report ---------------------------------------------------------------------------------------
TABLE1 = "results/report/table1.{ext}"
TABLE1_VS_PAPER = "results/report/table1_vs_paper.{ext}"
# The paper's own Table 1 numbers (a file of the repository, read by the report stage).
PAPER_TABLE1 = "workflow/report/paper_table1.yaml"
# Tables 2 and 3 (rule paper): the ablations / alternatives and the number of P-MoLin experts.
TABLE2 = "results/report/table2.{ext}"
TABLE2_VS_PAPER = "results/report/table2_vs_paper.{ext}"
# Each Table 2 / 3 row against CITab: differences and paired-test p-values.
TABLE2_TESTS = "results/report/table2_tests.{ext}"
TABLE3 = "results/report/table3.{ext}"
TABLE3_VS_PAPER = "results/report/table3_vs_paper.{ext}"
TABLE3_TESTS = "results/report/table3_tests.{ext}"
# Mean pairwise similarity of each encoder's header vectors next to the paper's.
HEADER_SIMILARITY_TABLE = "results/report/header_similarity.{ext}"
# Paper numbers of Tables 2 and 3 (and the header similarities), files of the repository.
PAPER_TABLE2 = "workflow/report/paper_table2.yaml"
PAPER_TABLE3 = "workflow/report/paper_table3.yaml"
# Figures 3-5 ({ext}: png or pdf) and the data each one plots (TSV), so the numbers can be checked.
FIGURE = "results/report/figure{number}.{ext}"
FIGURE_DATA = "results/report/figure{number}_data.tsv"

# --- bundles: one fine-tuned model with everything needed to use it on new subjects ---------------
# A self-contained folder per (variant, cohort, seed); the files inside: workflow.bundle.BUNDLE_FILES.
BUNDLE_DIR = "results/bundles/{variant}/{cohort}/seed-{seed}"

# --- predict: new subjects through a bundle, into the user's output folder (config predict.output) -
PREDICTIONS = "{output}/predictions.tsv"
PREDICT_QC = "{output}/qc.tsv"
# Preprocessing intermediates of the new images (the same per-image files as the preprocess stage).
PREDICT_WORK_DIR = "{output}/work"
# A finished run's test subjects written as new-subject inputs (the demo's predict example, tests):
# their native T1s (subject, session, path) and their clinical rows (harmonised columns).
TEST_SUBJECT_IMAGES = "results/test_subjects/{cohort}/images.tsv"
TEST_SUBJECT_TABLE = "results/test_subjects/{cohort}/table.csv"

# Columns of every exclusions table, whatever the stage: who was left out, where, and why.
EXCLUSION_COLUMNS = ["stage", "cohort", "subject", "session", "file", "row", "column", "reason"]
