#!/usr/bin/env python
"""Study benchmark: a finished study's stage timings against this machine's compute bound
(not collected by pytest).

Reads the per-stage metrics a `dvc repro` wrote (`metrics/*.json`: wall_seconds,
seconds_per_epoch, epochs_run, train_images_per_second, bank_seconds; extract_features'
images and images_per_second) and the params each stage ran with (dvc.lock, else
params.yaml). For every stage it counts the FLOPs of the work it did, from the models built
with stages/models.py at the study's image size (tests/model_flops.py: conv and dense
multiply-adds; forward and backward passes of every training image each epoch, frozen
layers forward only, the validation images forward each epoch; the augmentation bank K
copies of every training image forward through the frozen prefix, plus the validation
images once; extract_features and evaluate forward over their images). It divides them
by this machine's peak, measured in the same run by a float32 and a bfloat16 matrix-multiply
probe (tf.linalg.matmul of 2048x2048 operands, repeated), into a compute bound in seconds,
and reports wall / bound per stage and per phase (bank, training epochs).

The peak belongs to the machine the benchmark runs on: run it where the study ran, with
the precision the study used (`--precision`, default what `train.precision` resolves to
here). With `--repro DIR` it also times a no-op `dvc repro` in DIR (a finished study).

    python tests/study_benchmark.py --out tests/benchmarks/study-<machine>-<date>.json
    python tests/study_benchmark.py --metrics ../study/metrics --lock ../study/dvc.lock --repro ../study --out s.json
    python tests/study_benchmark.py --precision float32 --probe-seconds 2 --out s.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
for path in (ROOT, TESTS):  # run as `python tests/study_benchmark.py`
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import benchmark as B  # noqa: E402  (machine_info, repro_timings)
from stages.study import MODEL_NAMES, METRICS_DIR, metrics_file  # noqa: E402

MATMUL_SIZE = 2048
PRECISION_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--metrics", type=Path, default=ROOT / METRICS_DIR, help="the study's metrics folder (default: this project's)")
    p.add_argument("--lock", type=Path, default=ROOT / "dvc.lock", help="its dvc.lock: the params each stage ran with")
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="params.yaml, for stages dvc.lock does not list")
    p.add_argument("--precision", default=None, help="the study's precision: float32 | mixed_bfloat16 (default: train.precision resolved on this machine)")
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
    split = read_json(metrics_dir / "split.json")
    if not split:
        raise SystemExit(f"error: {metrics_dir / 'split.json'} not found: the benchmark needs a finished `split` stage")
    return {name: split[f"{name}_cats"] + split[f"{name}_dogs"] for name in ("train", "validation", "test")}


# ---------------------------------------------------------------- models and their FLOPs

def vgg16_base(image_size: int):
    import keras

    # Weights do not change FLOPs: a random-init base of the same shape as the study's.
    return keras.applications.VGG16(weights=None, include_top=False, input_shape=(image_size, image_size, 3))


def study_models(params: dict, image_size: int) -> dict[str, dict]:
    """Per stage, the models it runs and their per-example FLOPs: `model` (the whole trained
    model) and, where the stage builds an augmentation bank, `prefix` (the frozen layers the
    bank goes through) and `suffix` (what the epochs then train)."""
    from model_flops import pass_flops
    from stages import models as M

    def vgg16_classifier(stage: str, unfrozen: list[str] | None):
        head = section(params, "train_aug_frozen", "train_aug_frozen")  # finetune starts from that model
        # The preprocessing mode does not change the FLOPs counted (no multiply-adds).
        model = M.vgg16_with_head(vgg16_base(image_size), "imagenet", head["dense_units"], head["dropout"])
        if unfrozen:
            M.unfreeze(model, unfrozen)
        prefix, suffix = M.split_frozen_prefix(model)
        return {"model": pass_flops(model), "prefix": pass_flops(prefix), "suffix": pass_flops(suffix)}

    custom = {s: {"model": pass_flops(M.custom_convnet(image_size, section(params, s, s)["dropout"]))}
              for s in ("train_custom", "train_custom_aug")}
    extractor = M.vgg16_extractor(vgg16_base(image_size), "imagenet")
    feature_shape = extractor.output.shape[1:]
    clf = section(params, "train_feature_clf", "train_feature_clf")
    return {
        **custom,
        "extract_features": {"model": pass_flops(extractor)},
        "train_feature_clf": {"model": pass_flops(M.feature_classifier(feature_shape, clf["dense_units"], clf["dropout"]))},
        "train_aug_frozen": vgg16_classifier("train_aug_frozen", None),
        "finetune": vgg16_classifier("finetune", section(params, "finetune", "finetune")["unfreeze"]),
    }


def phase(name: str, flops: float, seconds: float | None, images: int, what: str) -> dict:
    return {"phase": name, "what": what, "images": images, "flops": flops, "seconds": seconds}


def stage_phases(stage: str, metrics: dict, models: dict, params: dict, counts: dict) -> list[dict]:
    """The work of one stage, as phases with their FLOPs and measured seconds."""
    n_train, n_val, n_test = counts["train"], counts["validation"], counts["test"]
    if stage == "extract_features":
        n = metrics["images"]
        seconds = n / metrics["images_per_second"]  # the forward passes alone, as the stage timed them
        return [phase("forward", n * models[stage]["model"]["forward"], seconds, n, "conv base forward over every split")]
    if stage == "evaluate":
        total = sum(models[name]["model"]["forward"] for name in MODEL_NAMES)
        return [phase("forward", n_test * total, None, n_test * len(MODEL_NAMES), "every model forward over the test split")]
    cfg = section(params, stage, stage)
    epochs, train_seconds = metrics["epochs_run"], metrics["epochs_run"] * metrics["seconds_per_epoch"]
    bank = cfg.get("augment_bank", 0) if "bank_seconds" in metrics else 0
    out = []
    if bank:
        f = models[stage]["prefix"]["forward"]
        out.append(phase("bank", (bank * n_train + n_val) * f, metrics["bank_seconds"], bank * n_train + n_val,
                         f"augmentation bank: {bank} copies of the training images and the validation images, forward through the frozen prefix"))
        trained = models[stage]["suffix"]
    else:
        trained = models[stage]["model"]
    out.append(phase("epochs", epochs * (n_train * trained["train_step"] + n_val * trained["forward"]), train_seconds,
                     epochs * (n_train + n_val),
                     f"{epochs} epochs: forward and backward over {n_train} training images, forward over {n_val} validation images"))
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

def stage_report(stage: str, metrics: dict, models: dict, params: dict, counts: dict, gflops: float) -> dict:
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
        "wall_seconds": wall,
        "images_per_second": metrics.get("train_images_per_second", metrics.get("images_per_second")),
        "flops": float(f"{flops:.4g}"),
        "compute_bound_seconds": round(bound, 1),
        "wall_over_compute_bound": round(wall / bound, 2) if wall else None,
        "phases": phases,
    }
    for key in ("epochs_run", "seconds_per_epoch", "bank_seconds", "images"):
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


def study_report(args) -> dict:
    from stages.training import resolve_precision

    params = study_params(args.lock, args.params)
    precision = args.precision or resolve_precision(section(params, "train_custom", "train")["precision"])
    image_size = section(params, "split", "split")["image_size"]
    counts = split_counts(args.metrics)
    probe = matmul_probe(args.probe_seconds, args.probe_rounds)
    gflops = probe["gflops_peak"].get(PRECISION_DTYPES[precision])
    if gflops is None:
        raise SystemExit(f"error: no matmul probe for precision {precision}")
    models = study_models(params, image_size)
    stages, missing = {}, []
    for stage in ("extract_features", *MODEL_NAMES, "evaluate"):
        metrics = read_json(args.metrics / metrics_file(stage).name)
        if metrics is None:
            missing.append(stage)
            continue
        stages[stage] = stage_report(stage, metrics, models, params, counts, gflops)
    timed = [s for s in stages.values() if s["measured_seconds"]]
    return {
        "precision": precision,
        "image_size": image_size,
        "images": counts,
        "peak_gflops_used": gflops,
        "matmul_probe": probe,
        "flops_per_example": models,
        "stages": stages,
        "stages_without_metrics": missing,
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
        f"(x{probe['bfloat16_over_float32']}); study precision {s['precision']} -> {s['peak_gflops_used']} GFLOP/s",
        f"{'stage':20s} {'wall s':>8s} {'img/s':>8s} {'GFLOP':>10s} {'bound s':>8s} {'x bound':>8s}",
    ]
    for name, row in s["stages"].items():
        lines.append(f"{name:20s} {fmt(row['wall_seconds'], 8, 1)} {fmt(row['images_per_second'], 8, 1)} "
                     f"{row['flops'] / 1e9:10.0f} {row['compute_bound_seconds']:8.1f} {fmt(row['wall_over_compute_bound'], 8, 2)}")
        if len(row["phases"]) > 1:
            for p in row["phases"]:
                lines.append(f"  {p['phase']:18s} {fmt(p['seconds'], 8, 1)} {'':8s} {p['flops'] / 1e9:10.0f} "
                             f"{p['compute_bound_seconds']:8.1f} {fmt(p['over_compute_bound'], 8, 2)}")
    t = s["total"]
    lines.append(f"{'total (measured)':20s} {t['measured_seconds']:8.1f} {'':8s} {'':10s} {t['compute_bound_seconds']:8.1f}")
    if "dvc" in report:
        noop = report["dvc"].get("noop_repro")
        lines.append(f"no-op dvc repro: {noop['wall_seconds']} s, exit {noop['exit_code']}" if noop else f"dvc: {report['dvc']}")
    return "\n".join(lines)


def fmt(x, width: int, digits: int) -> str:
    return f"{'-':>{width}s}" if x is None else f"{x:{width}.{digits}f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    report = {"machine": B.machine_info(), "sources": {"metrics": str(args.metrics.resolve()), "lock": str(args.lock.resolve()),
                                                      "metrics_machine": args.metrics_machine}}
    report["study"] = study_report(args)
    if args.repro:
        report["dvc"] = B.repro_timings(args.repro, force=False, noop_only=True)
    report["load_average_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(summary(report))
    print(f"wrote {args.out}")
    return 1 if report.get("dvc", {}).get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
