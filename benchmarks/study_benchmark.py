"""Study benchmark: a finished study's stage timings against this machine's compute bound.

Reads the per-stage run records a `dvc repro` wrote (the folder that holds `--metrics`:
plots/extract_features/record.json, plots/<stage>/history.json ("run"), metrics/runs/evaluate.json;
see stages/lib/study.py), split's counts (metrics/runs/split.json) and the params each stage ran
with (dvc.lock, else params.yaml). For every stage it counts the FLOPs of the
work it did, phase by phase, from the models built with stages/lib/models.py at the study's
image size (benchmarks/model_flops.py: conv and dense multiply-adds; a training step is the
forward and backward pass, frozen layers forward only):

- extract_features: `features`, VGG16 blocks 1-4 then block 5 over every split
  (images / images_per_second); `bank`, K augmented copies of the training images through
  blocks 1-4 (bank_images, bank_seconds; the validation images' block4 activations come
  from the features pass).
- train_aug_frozen and finetune with `vgg16.augment_bank: K` > 0: `frozen`, the frozen
  layers above block4_pool once over the bank's K x train + validation activations
  (frozen_seconds; train_aug_frozen's block 5, none in finetune); `epochs`, train steps of
  the rest (the head; block 5 + head) over the training activations and its forward over
  the validation activations, every epoch. With K = 0: the whole model on augmented images
  every epoch (the online path).
- train_custom, train_custom_aug, train_feature_clf: `epochs`, as above on their inputs.
- evaluate: every model forward over the test split (its metrics hold no timings).

It divides the FLOPs by this machine's peak, measured in the same run by a float32 and a
bfloat16 matrix-multiply probe (tf.linalg.matmul of 2048x2048 operands, repeated), into a
compute bound in seconds, and reports wall / bound per stage and per phase. Each stage is
bounded at the precision its metrics record (`precision`); a stage that records none
(evaluate) takes `--precision`, else what the other stages recorded, else what
`train.precision` resolves to here. Metrics written before extract_features built the
shared augmentation bank (extract_features.json without bank_images; train_aug_frozen or
finetune with bank_seconds: each stage built its own bank) are skipped, with the reason.

The peak belongs to the machine the benchmark runs on: run it where the study ran. With
`--repro DIR` it also times a no-op `dvc repro` in DIR (a finished study).

Run from the project root, as a module:

    python -m benchmarks.study_benchmark --out benchmarks/results/<cpu-kind>-<date>-study.json
    python -m benchmarks.study_benchmark --metrics ../study/metrics --lock ../study/dvc.lock --repro ../study --out s.json
    python -m benchmarks.study_benchmark --probe-seconds 2 --out s.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from benchmarks import benchmark  # machine_info, repro_timings
from stages.lib.study import (FEATURES_RECORD_FILE, MODEL_NAMES, METRICS_DIR, SPLITS, feature_passes, history_file, run_file,
                              training_record)

ROOT = Path(__file__).resolve().parents[1]

MATMUL_SIZE = 2048
PRECISION_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--metrics", type=Path, default=ROOT / METRICS_DIR, help="the study's metrics folder (default: this project's)")
    p.add_argument("--lock", type=Path, default=ROOT / "dvc.lock", help="its dvc.lock: the params each stage ran with")
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="params.yaml, for stages dvc.lock does not list")
    p.add_argument("--precision", default=None, help="float32 | mixed_bfloat16: for stages whose metrics record no precision (evaluate); default: what the other stages recorded, else train.precision resolved on this machine")
    p.add_argument("--probe-seconds", type=float, default=3.0, help="seconds of matmul per dtype and round (default 3)")
    p.add_argument("--probe-rounds", type=int, default=3, help="interleaved rounds of the matmul probe (default 3)")
    p.add_argument("--metrics-machine", default="this machine", help="where the metrics were measured, recorded as given (default: this machine)")
    p.add_argument("--repro", type=Path, metavar="DIR", help="also time a no-op `dvc repro` in DIR (a finished study)")
    args = p.parse_args(argv)
    if args.precision not in (None, *PRECISION_DTYPES):
        p.error(f"--precision must be one of {', '.join(PRECISION_DTYPES)}, got {args.precision!r}")
    if args.probe_seconds <= 0 or args.probe_rounds < 1:
        p.error("--probe-seconds must be > 0 and --probe-rounds >= 1")
    return args


# ---------------------------------------------------------------- the study's record

def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def read_stage_record(study: Path, stage: str) -> dict | None:
    """The run record of `stage` in the study in folder `study`, as one flat dict (None if
    the stage has not run): a training stage's "run" in its history file; extract_features'
    per-pass numbers as images, images_per_second (its features pass), bank_images and
    bank_seconds."""
    if stage == "evaluate":
        return read_json(study / run_file(stage))
    if stage != "extract_features":
        return training_record(study / history_file(stage)) or None
    record = read_json(study / FEATURES_RECORD_FILE)
    if record is None or "passes" not in record:
        return record
    passes = feature_passes(record)
    flat = {k: v for k, v in record.items() if k != "passes"}
    flat.update(images=passes["features"]["images"], images_per_second=passes["features"]["images_per_second"],
                bank_images=passes.get("bank", {}).get("images", 0), bank_seconds=passes.get("bank", {}).get("seconds", 0))
    return flat


def study_params(lock: Path, params_file: Path) -> dict[str, dict]:
    """Per stage, the params sections it ran with (dvc.lock), else params.yaml's."""
    import yaml

    current = yaml.safe_load(params_file.read_text()) if params_file.is_file() else {}
    locked = yaml.safe_load(lock.read_text()).get("stages", {}) if lock.is_file() else {}
    out = {}
    for stage, entry in locked.items():
        sections = {}
        for key, value in (entry.get("params") or {}).get("params.yaml", {}).items():
            section, _, sub = key.partition(".")  # a whole section, or one dotted key
            if sub:
                sections.setdefault(section, {})[sub] = value
            else:
                sections[section] = value
        out[stage] = sections
    out["_current"] = current
    return out


def section(params: dict, stage: str, name: str) -> dict:
    return params.get(stage, {}).get(name) or params["_current"][name]


def split_counts(metrics_dir: Path) -> dict[str, int]:
    """Images per split (both classes), from split's run record."""
    path = run_file("split", metrics_dir)
    split = read_json(path)
    if not split:
        raise SystemExit(f"error: {path} not found: the benchmark needs a finished `split` stage")
    return {name: sum(split[name].values()) for name in SPLITS}


# ---------------------------------------------------------------- models and their FLOPs

BANK_STAGES = ("train_aug_frozen", "finetune")  # the stages that train on extract_features' bank


def vgg16_base(image_size: int):
    import keras

    # Weights do not change FLOPs: a random-init base of the same shape as the study's.
    return keras.applications.VGG16(weights=None, include_top=False, input_shape=(image_size, image_size, 3))


def study_models(params: dict, image_size: int) -> dict[str, dict]:
    """Per stage, the per-example FLOPs of what it runs. Training stages: `model` (the whole
    trained model); train_aug_frozen and finetune also `frozen` (the frozen layers above the
    bank's block4_pool, or None) and `trained` (the rest, which the epochs train on the bank).
    extract_features: `blocks_1_4` (pixels to block4_pool) and `block_5` (to block5_pool)."""
    from benchmarks.model_flops import pass_flops
    from stages.lib import models

    head = section(params, "train_aug_frozen", "train_aug_frozen")  # finetune starts from that model

    def vgg16_classifier(unfrozen: list[str] | None) -> dict:
        # The preprocessing mode does not change the FLOPs counted (no multiply-adds).
        model = models.vgg16_with_head(vgg16_base(image_size), "imagenet", head["dense_units"], head["dropout"])
        if unfrozen:
            models.unfreeze(model, unfrozen)
        # Cut as stages/lib/training.py cuts it for the bank.
        frozen, trained = models.split_frozen_prefix(models.split_at(model, models.BANK_LAYER)[1])
        return {"model": pass_flops(model), "frozen": pass_flops(frozen) if frozen else None,
                "trained": pass_flops(trained)}

    custom = {s: {"model": pass_flops(models.custom_convnet(image_size, section(params, s, s)["dropout"]))}
              for s in ("train_custom", "train_custom_aug")}
    to_block4, block5 = models.vgg16_bank_split(vgg16_base(image_size), "imagenet")
    clf = section(params, "train_feature_clf", "train_feature_clf")
    return {
        **custom,
        "extract_features": {"blocks_1_4": pass_flops(to_block4), "block_5": pass_flops(block5)},
        "train_feature_clf": {"model": pass_flops(models.feature_classifier(block5.output.shape[1:], clf["dense_units"],
                                                                       clf["dropout"]))},
        "train_aug_frozen": vgg16_classifier(None),
        "finetune": vgg16_classifier(section(params, "finetune", "finetune")["unfreeze"]),
    }


def old_format(stage: str, metrics: dict) -> str | None:
    """Why a metrics file predates the bank built once by extract_features, or None."""
    if stage == "extract_features" and "bank_images" not in metrics:
        return "old format (no bank_images): written before extract_features built the augmentation bank"
    if stage in BANK_STAGES and "bank_seconds" in metrics:
        return "old format (bank_seconds): the stage built its own augmentation bank"
    return None


def phase(name: str, flops: float, seconds: float | None, images: int, what: str) -> dict:
    return {"phase": name, "what": what, "images": images, "flops": flops, "seconds": seconds}


def stage_phases(stage: str, metrics: dict, models: dict, params: dict, counts: dict) -> list[dict]:
    """The work of one stage (new-format metrics), as phases with their FLOPs and measured seconds."""
    n_train, n_val, n_test = counts["train"], counts["validation"], counts["test"]
    if stage == "extract_features":
        blocks_1_4, block_5 = (models[stage][k]["forward"] for k in ("blocks_1_4", "block_5"))
        n, bank = metrics["images"], metrics["bank_images"]
        out = [phase("features", n * (blocks_1_4 + block_5), n / metrics["images_per_second"], n,
                     "VGG16 blocks 1-4 then block 5 over every split")]
        if bank:
            out.append(phase("bank", bank * blocks_1_4, metrics["bank_seconds"], bank,
                             f"augmentation bank: {bank // n_train} augmented copies of the {n_train} training images "
                             "through blocks 1-4 (timed with its float16 cast and bank.npz write)"))
        return out
    if stage == "evaluate":
        total = sum(models[name]["model"]["forward"] for name in MODEL_NAMES)
        return [phase("forward", n_test * total, None, n_test * len(MODEL_NAMES), "every model forward over the test split")]
    epochs, train_seconds = metrics["epochs_run"], metrics["epochs_run"] * metrics["seconds_per_epoch"]
    # An old dvc.lock's vgg16 section has no augment_bank: its stage (without bank_seconds) ran online.
    copies = section(params, stage, "vgg16").get("augment_bank", 0) if stage in BANK_STAGES else 0
    out, inputs = [], "images"
    if copies:
        frozen, trained, inputs = models[stage]["frozen"], models[stage]["trained"], "bank activations"
        if frozen:
            n = copies * n_train + n_val
            out.append(phase("frozen", n * frozen["forward"], metrics.get("frozen_seconds"), n,
                             f"frozen layers above the bank's layer, once over it: {copies} x {n_train} training "
                             f"and {n_val} validation activations"))
    else:
        trained = models[stage]["model"]
    out.append(phase("epochs", epochs * (n_train * trained["train_step"] + n_val * trained["forward"]), train_seconds,
                     epochs * (n_train + n_val),
                     f"{epochs} epochs: forward and backward over {n_train} training {inputs}, "
                     f"forward over {n_val} validation {inputs}"))
    return out


# ---------------------------------------------------------------- this machine's peak

def matmul_probe(seconds: float, rounds: int) -> dict:
    """GFLOP/s of tf.linalg.matmul on MATMUL_SIZE^2 operands, float32 and bfloat16
    interleaved; per dtype the best round (the peak) and the median."""
    import tensorflow as tf

    n = MATMUL_SIZE
    operands = {}
    for dtype in ("float32", "bfloat16"):
        a = tf.random.stateless_normal((n, n), seed=(1, 2), dtype=tf.float32)
        operands[dtype] = (tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype))

    def repeat(a, b, times: int):
        # Eager: each product is computed in full (no graph optimizer may hoist or prune
        # it); the dispatch overhead is microseconds against a product of tens of ms.
        for _ in range(times):
            c = tf.linalg.matmul(a, b)
        return c[0, 0]

    for a, b in operands.values():  # warm-up: oneDNN primitive creation, thread pool start
        repeat(a, b, 2).numpy()
    rates = {dtype: [] for dtype in operands}
    loads = []
    for _ in range(rounds):
        for dtype, (a, b) in operands.items():
            times = 1
            while True:  # enough repetitions to fill `seconds`
                t = time.perf_counter()
                repeat(a, b, times).numpy()
                elapsed = time.perf_counter() - t
                if elapsed >= seconds or times >= 1 << 14:
                    break
                times = max(times * 2, int(times * seconds / max(elapsed, 1e-3)))
            rates[dtype].append(2 * n**3 * times / elapsed / 1e9)
            loads.append(os.getloadavg()[0])
    return {
        "operation": f"tf.linalg.matmul {n}x{n} @ {n}x{n}",
        "gflops_peak": {d: round(max(r), 1) for d, r in rates.items()},
        "gflops_median": {d: round(statistics.median(r), 1) for d, r in rates.items()},
        "gflops_each": {d: [round(x, 1) for x in r] for d, r in rates.items()},
        "bfloat16_over_float32": round(max(rates["bfloat16"]) / max(rates["float32"]), 3),
        "load_1min_each": [round(x, 2) for x in loads],
    }


# ---------------------------------------------------------------- report

def stage_report(stage: str, metrics: dict, models: dict, params: dict, counts: dict, precision: str,
                 gflops: float) -> dict:
    phases = stage_phases(stage, metrics, models, params, counts)
    for p in phases:
        p["compute_bound_seconds"] = round(p["flops"] / (gflops * 1e9), 1)
        p["over_compute_bound"] = round(p["seconds"] / p["compute_bound_seconds"], 2) if p["seconds"] else None
        p["achieved_gflops"] = round(p["flops"] / p["seconds"] / 1e9, 1) if p["seconds"] else None
        p["seconds"] = None if p["seconds"] is None else round(p["seconds"], 1)
        p["flops"] = float(f"{p['flops']:.4g}")
    flops = sum(p["flops"] for p in phases)
    bound = flops / (gflops * 1e9)
    wall = metrics.get("wall_seconds")
    row = {
        "precision": precision,
        "peak_gflops_used": gflops,
        "wall_seconds": wall,
        "images_per_second": metrics.get("train_images_per_second", metrics.get("images_per_second")),
        "flops": float(f"{flops:.4g}"),
        "compute_bound_seconds": round(bound, 1),
        "wall_over_compute_bound": round(wall / bound, 2) if wall else None,
        "phases": phases,
    }
    for key in ("epochs_run", "seconds_per_epoch", "frozen_seconds", "images", "bank_images", "bank_seconds", "cpu"):
        if key in metrics:
            row[key] = metrics[key]
    timed = sum(p["seconds"] or 0 for p in phases)
    if wall and timed > 1.02 * wall:
        # A stage resumed from its checkpoint records the last session's wall seconds but
        # every epoch's: its phases (epochs x median epoch) are the better measure.
        row["note"] = f"phases take {timed:.0f} s, more than wall_seconds: a resumed run, wall_seconds is its last session"
        row["phases_over_compute_bound"] = round(timed / bound, 2)
    row["measured_seconds"] = round(max(wall or 0, timed), 1) or None  # what the totals add up
    return row


def recorded_precision(metrics: dict) -> str | None:
    # evaluate.json's per-model "precision" is a score, one level down: never read here.
    value = metrics.get("precision")
    return value if isinstance(value, str) else None


def study_report(args) -> dict:
    from stages.lib.runtime import resolve_precision

    params = study_params(args.lock, args.params)
    image_size = section(params, "split", "split")["image_size"]
    counts = split_counts(args.metrics)
    found, missing, skipped = {}, [], {}
    for stage in ("extract_features", *MODEL_NAMES, "evaluate"):
        metrics = read_stage_record(args.metrics.parent, stage)
        if metrics is None:
            missing.append(stage)
        elif outdated := old_format(stage, metrics):
            skipped[stage] = f"{outdated}; rerun the study to benchmark it"
        else:
            found[stage] = metrics
    # A stage's own record first; for a stage without one, what the user says, then what
    # the others recorded, then a guess.
    recorded = [p for p in map(recorded_precision, found.values()) if p]
    if args.precision:
        default, source = args.precision, "--precision"
    elif recorded:
        default, source = recorded[0], "recorded by the other stages"
    else:
        default = resolve_precision(section(params, "train_custom", "train")["precision"])
        source = "train.precision resolved on this machine"
    probe = matmul_probe(args.probe_seconds, args.probe_rounds)
    peaks = {p: probe["gflops_peak"][dtype] for p, dtype in PRECISION_DTYPES.items() if dtype in probe["gflops_peak"]}
    models = study_models(params, image_size)
    stages = {}
    for stage, metrics in found.items():
        precision = recorded_precision(metrics) or default
        if precision not in peaks:
            skipped[stage] = f"precision {precision}: the matmul probe measures {', '.join(peaks)} only"
            continue
        stages[stage] = stage_report(stage, metrics, models, params, counts, precision, peaks[precision])
    timed = [s for s in stages.values() if s["measured_seconds"]]
    return {
        "image_size": image_size,
        "images": counts,
        "precision_default": {"precision": default, "source": source,
                              "note": "for stages whose metrics record no precision; the others use their own"},
        "peak_gflops": peaks,
        "matmul_probe": probe,
        "flops_per_example": models,
        "stages": stages,
        "stages_without_metrics": missing,
        "stages_skipped": skipped,
        "total": {
            "measured_seconds": round(sum(s["measured_seconds"] for s in timed), 1),
            "compute_bound_seconds": round(sum(s["compute_bound_seconds"] for s in timed), 1),
            "note": "stages with timings in their metrics (evaluate records none; download and split are not counted); "
                    "a resumed stage counts its phases, not its last session's wall_seconds",
        },
    }


def summary(report: dict) -> str:
    m, s = report["machine"], report["study"]
    probe = s["matmul_probe"]
    lines = [
        f"machine: {m['cpu_model']}, {m['cpus_usable']} CPUs, flags {', '.join(f for f, on in m['cpu_flags'].items() if on)}, TF {m['tensorflow_version']}",
        f"matmul peak GFLOP/s: float32 {probe['gflops_peak']['float32']}, bfloat16 {probe['gflops_peak']['bfloat16']} "
        f"(x{probe['bfloat16_over_float32']}); stages without a recorded precision: {s['precision_default']['precision']} "
        f"({s['precision_default']['source']})",
        f"{'stage':20s} {'precision':>15s} {'wall s':>8s} {'img/s':>8s} {'GFLOP':>10s} {'bound s':>8s} {'x bound':>8s}",
    ]
    for name, row in s["stages"].items():
        lines.append(f"{name:20s} {row['precision']:>15s} {fmt(row['wall_seconds'], 8, 1)} {fmt(row['images_per_second'], 8, 1)} "
                     f"{row['flops'] / 1e9:10.0f} {row['compute_bound_seconds']:8.1f} {fmt(row['wall_over_compute_bound'], 8, 2)}")
        if len(row["phases"]) > 1:
            for p in row["phases"]:
                lines.append(f"  {p['phase']:34s} {fmt(p['seconds'], 8, 1)} {'':8s} {p['flops'] / 1e9:10.0f} "
                             f"{p['compute_bound_seconds']:8.1f} {fmt(p['over_compute_bound'], 8, 2)}")
    for name, reason in s["stages_skipped"].items():
        lines.append(f"{name:20s} skipped: {reason}")
    t = s["total"]
    lines.append(f"{'total (measured)':36s} {t['measured_seconds']:8.1f} {'':8s} {'':10s} {t['compute_bound_seconds']:8.1f}")
    if "dvc" in report:
        noop = report["dvc"].get("noop_repro")
        lines.append(f"no-op dvc repro: {noop['wall_seconds']} s, exit {noop['exit_code']}" if noop else f"dvc: {report['dvc']}")
    return "\n".join(lines)


def fmt(x, width: int, digits: int) -> str:
    return f"{'-':>{width}s}" if x is None else f"{x:{width}.{digits}f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    report = {"machine": benchmark.machine_info(), "sources": {"metrics": str(args.metrics.resolve()), "lock": str(args.lock.resolve()),
                                                              "params": str(args.params.resolve()), "metrics_machine": args.metrics_machine}}
    report["study"] = study_report(args)
    if args.repro:
        report["dvc"] = benchmark.repro_timings(args.repro, force=False, noop_only=True)
    report["load_average_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(summary(report))
    print(f"wrote {args.out}")
    return 1 if report.get("dvc", {}).get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
