"""Training-step time and peak memory of the Table 1 baselines (forward + backward + Adam step).

``--stage finetune`` (the default) times the six supervised baselines' classification step;
``--stage pretrain`` times the pretraining step (``pretrain_losses``) of the self-supervised
baselines MMCL, TIP and ViTa.

Presets take the model sizes and input shape from the configuration files, as benchmarks/model_step.py:

* ``paper``: config.yaml (ResNet-50 trunks, D = 512, 160x208x176 volumes);
* ``demo``: config.yaml + config/demo.yaml (small model sizes, 48x56x48 volumes).

The table is ADNI's from config/columns.yaml (14 columns, 2 categorical), with about 10% of the
cells missing. HyperFusion keeps its own size (base filters 16) in both presets: it takes no
shared size setting; nor does ViTa's tabular ViT (D 1025, 2 blocks), which is full size in both.

Examples::

    python benchmarks/baseline_step.py --preset demo
    python benchmarks/baseline_step.py --preset demo --stage pretrain    # MMCL, TIP, ViTa
    python benchmarks/baseline_step.py --device cuda            # paper preset, batch 12
    python benchmarks/baseline_step.py --variants daft hyperfusion --batch-size 4

On a shared machine use one thread (the default): with more threads than free cores, torch's
threads wait on each other and a step can take 20-50 times longer (seen with 2 threads on a busy
2-core machine). Peak memory is torch's peak allocation on CUDA; on CPU it is the peak resident
set size of a fresh process per model (so it includes the Python + torch runtime, about 0.3 GB).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))  # model_step's helpers, also when imported from elsewhere

from model import TableSpec, build_model, list_variants  # noqa: E402
from model_step import PRESETS, measure_steps, merged_config  # noqa: E402

COHORT = "ADNI"
MISSING_SHARE = 0.1


def adni_table() -> TableSpec:
    columns = yaml.safe_load((REPO / "config" / "columns.yaml").read_text())["cohorts"][COHORT]["columns"]
    return TableSpec.from_columns(columns)


def make_batch(batch: int, image_shape: list[int], table: TableSpec, device: torch.device) -> dict:
    """Random image [B,1,X,Y,Z]; values [B,C] with codes in categorical cells; missing [B,C]; the
    same row as the uncorrupted original_values / original_missing (TIP's pretraining reads both)."""
    values = torch.randn(batch, table.num_columns)
    for column, cardinality in enumerate(table.cardinalities):
        if cardinality:
            values[:, column] = torch.randint(0, cardinality, (batch,)).float()
    missing = torch.rand(batch, table.num_columns) < MISSING_SHARE
    values[missing] = 0.0
    values, missing = values.to(device), missing.to(device)
    return {"image": torch.rand(batch, 1, *image_shape, device=device), "values": values, "missing": missing,
            "original_values": values, "original_missing": missing}


def time_steps(variant: str, args, settings: dict, image_shape: list[int], device: torch.device) -> dict:
    """Warm-up steps, then timed training steps of one baseline (``args.stage``)."""
    torch.manual_seed(0)
    table = adni_table()
    model = build_model(variant, table=table, stage=args.stage, **settings).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = make_batch(args.batch_size, image_shape, table, device)
    pretraining = args.stage == "pretrain"
    inputs = [batch[name] for name in (model.pretrain_input_names if pretraining else model.input_names)]
    labels = torch.randint(0, settings.get("num_classes", 3), (args.batch_size,), device=device)

    def loss_of_one_batch() -> torch.Tensor:
        if pretraining:
            return model.pretrain_losses(*inputs)["loss"]
        return F.cross_entropy(model.classify(*inputs).float(), labels)

    measured = measure_steps(model, loss_of_one_batch, optimizer, args.warmup, args.steps, device, args.bf16)
    return {
        "preset": args.preset, "stage": args.stage, "variant": variant, "device": str(device), "bf16": args.bf16,
        "threads": torch.get_num_threads(), "batch_size": args.batch_size, "image_shape": image_shape,
        "parameters": sum(p.numel() for p in model.parameters()), **measured,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    supervised, self_supervised = list_variants("supervised"), list_variants("ssl_per_cohort")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: paper on CUDA, demo on CPU")
    parser.add_argument("--stage", choices=["finetune", "pretrain"], default="finetune",
                        help="finetune: the supervised baselines' step; pretrain: the self-supervised ones'")
    parser.add_argument("--variants", nargs="+", choices=supervised + self_supervised, default=None,
                        help="default: every baseline that has the stage")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: the preset's fine-tuning batch size on CUDA, 2 on CPU")
    parser.add_argument("--image-shape", type=int, nargs=3, default=None, help="default: the preset's")
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: on a busy shared CPU, idle-waiting torch threads "
                             "inflate a step's time many times over)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    with_stage = self_supervised if args.stage == "pretrain" else supervised + self_supervised
    args.variants = args.variants or (self_supervised if args.stage == "pretrain" else supervised)
    if set(args.variants) - set(with_stage):
        parser.error(f"--stage {args.stage}: {sorted(set(args.variants) - set(with_stage))} have no such stage")

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda given but CUDA is not available")
    if device.type == "cpu" and len(args.variants) > 1:
        # one process per model, so each peak resident set size is that model's own
        results = []
        for variant in args.variants:
            one = _without_option(_without_option(argv, "--variants"), "--json") + ["--variants", variant]
            out = subprocess.run([sys.executable, __file__, *one], check=True, stdout=subprocess.PIPE, text=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(result), flush=True)
            results.append(result)
        _write(args.json, results)
        return results

    torch.set_num_threads(args.threads)
    if args.preset is None:
        args.preset = "paper" if device.type == "cuda" else "demo"
    config = merged_config(PRESETS[args.preset]["configs"])
    settings = dict(config.get("model") or {})
    image_shape = args.image_shape or (config.get("pretrain") or {}).get("image_shape") or [160, 208, 176]
    if args.batch_size is None:
        args.batch_size = (config.get("finetune") or {}).get("batch_size", 12) if device.type == "cuda" else 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    results = []
    for variant in args.variants:
        result = time_steps(variant, args, settings, list(image_shape), device)
        print(json.dumps(result), flush=True)
        results.append(result)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    _write(args.json, results)
    return results


def _without_option(argv: list[str], option: str) -> list[str]:
    """argv without ``option`` and the values that follow it (up to the next ``--`` flag)."""
    kept, skipping = [], False
    for arg in argv:
        if arg == option:
            skipping = True
        elif skipping and arg.startswith("--"):
            skipping = False
            kept.append(arg)
        elif not skipping:
            kept.append(arg)
    return kept


def _write(path: Path | None, results: list[dict]) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
