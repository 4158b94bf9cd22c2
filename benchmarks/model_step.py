"""Training-step throughput and peak memory of CITab (forward + backward + Adam step).

Presets take the model sizes and input shape from the configuration files:

* ``paper``: config.yaml (ResNet-50 CITab, 768-d headers, 160x208x176 volumes);
* ``demo``: config.yaml + config/demo.yaml (small model, 384-d headers, demo input shape).

Both the pretraining step (ITC + ITM, 3B fusion sequences) and the fine-tuning step (classifier
on the fused CLS, unpadded rows) are timed. Rows are padded to 21 columns with the paper's cohort
mix (14 / 7 / 21 valid columns).

Examples::

    python benchmarks/model_step.py --preset demo
    python benchmarks/model_step.py --preset paper --batch-size 2 --steps 1 --warmup 1
    python benchmarks/model_step.py --device cuda --bf16        # paper preset, batch 12

Peak memory is torch's peak allocation on CUDA and the process's peak resident set size on CPU
(so on CPU run one preset per process for a clean figure).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from model import build_model  # noqa: E402

PRESETS = {
    "paper": {"configs": ["config.yaml"], "header_dim": 768},
    "demo": {"configs": ["config.yaml", "config/demo.yaml"], "header_dim": 384},
}
COHORT_COLUMNS = (14, 7, 21)  # valid columns per cohort (ADNI, AIBL, NACC); padded to the largest


def merged_config(files: list[str]) -> dict:
    """Overlay the config files section by section (as Snakemake merges --configfile)."""
    merged: dict = {}
    for name in files:
        for section, values in (yaml.safe_load((REPO / name).read_text()) or {}).items():
            if isinstance(values, dict) and isinstance(merged.get(section), dict):
                merged[section] = {**merged[section], **values}
            else:
                merged[section] = values
    return merged


def make_batch(batch: int, image_shape: list[int], num_headers: int, device: torch.device, padded: bool):
    """Random image [B,1,X,Y,Z], values / col_ids / pad_mask [B, C] in the cohort mix."""
    width = max(COHORT_COLUMNS)
    image = torch.rand(batch, 1, *image_shape, device=device)
    values = torch.randn(batch, width, device=device)
    col_ids = torch.randint(0, num_headers, (batch, width), device=device)
    pad_mask = torch.zeros(batch, width, dtype=torch.bool, device=device)
    if not padded:  # fine-tuning: one cohort (ADNI), no padding
        return image, values[:, :COHORT_COLUMNS[0]], col_ids[:, :COHORT_COLUMNS[0]], None
    for row in range(batch):
        pad_mask[row, COHORT_COLUMNS[row % len(COHORT_COLUMNS)]:] = True
    return image, values, col_ids, pad_mask


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def measure_steps(model: torch.nn.Module, loss_of_one_batch, optimizer: torch.optim.Optimizer, warmup: int,
                  steps: int, device: torch.device, bf16: bool) -> dict:
    """Run ``warmup`` untimed, then ``steps`` timed training steps (forward, backward, optimizer step).

    Returns ``seconds_per_step`` (wall), ``cpu_seconds_per_step`` (this process: on a shared machine
    wall time alone overstates the cost), ``peak_memory_mb`` and the last ``loss``.
    """
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_of_one_batch()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loss = step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {
        "seconds_per_step": round((time.perf_counter() - start) / steps, 4),
        "cpu_seconds_per_step": round((time.process_time() - cpu_start) / steps, 4),
        "peak_memory_mb": round(peak_memory_mb(device), 1), "loss": round(loss, 4),
    }


def time_steps(stage: str, args, settings: dict, image_shape: list[int], device: torch.device) -> dict:
    """Warm-up steps, then timed steps of one stage; returns the measurements."""
    torch.manual_seed(0)
    num_headers = 42
    bank = torch.randn(num_headers, PRESETS[args.preset]["header_dim"])
    model = build_model(args.variant, bank, stage=stage, **settings).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1.5e-6)
    batch = make_batch(args.batch_size, image_shape, num_headers, device, padded=stage == "pretrain")
    labels = torch.randint(0, settings.get("num_classes", 3), (args.batch_size,), device=device)

    def loss_of_one_batch() -> torch.Tensor:
        if stage == "pretrain":
            return model.pretrain_losses(*batch)["loss"]
        return F.cross_entropy(model.classify(*batch).float(), labels)

    measured = measure_steps(model, loss_of_one_batch, optimizer, args.warmup, args.steps, device, args.bf16)
    return {
        "preset": args.preset, "stage": stage, "variant": args.variant, "device": str(device),
        "bf16": args.bf16, "threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "image_shape": image_shape, "parameters": sum(p.numel() for p in model.parameters()),
        **measured, "samples_per_s": round(args.batch_size / measured["seconds_per_step"], 3),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="default: paper on CUDA, demo on CPU")
    parser.add_argument("--variant", default="citab", help="registered model variant")
    parser.add_argument("--stages", nargs="+", choices=["pretrain", "finetune"], default=["pretrain", "finetune"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA or CPU)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: the preset's pretrain batch size on CUDA, 2 on CPU")
    parser.add_argument("--image-shape", type=int, nargs=3, default=None, help="default: the preset's")
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda given but CUDA is not available")
    if args.preset is None:
        args.preset = "paper" if device.type == "cuda" else "demo"
    config = merged_config(PRESETS[args.preset]["configs"])
    settings = dict(config.get("model") or {})
    pretrain = config.get("pretrain") or {}
    image_shape = args.image_shape or pretrain.get("image_shape") or [160, 208, 176]
    if args.batch_size is None:
        args.batch_size = pretrain.get("batch_size", 12) if device.type == "cuda" else 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    results = []
    for stage in args.stages:
        result = time_steps(stage, args, settings, list(image_shape), device)
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
