"""What helps on 2 cores: runtime settings measured as ratios in one run.

Four families, each timed on the real Kaggle images (decoded once to the study's image size)
and the real VGG16 ImageNet weights, in the study's precision (`train.precision: auto`, i.e.
mixed_bfloat16 on a CPU with AVX512-BF16 or AMX, float32 elsewhere) unless said otherwise:

  runtime       per process, so that it applies before TensorFlow starts: the default,
                intra/inter-op threads (tf.config.threading) 2/1, 1/1, 1/2, and the oneDNN
                switches TF 2.21 reads (TF_ENABLE_ONEDNN_OPTS=0,
                TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1, TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1,
                TF_ONEDNN_THREADPOOL_USE_CALLER_THREAD=1); each process times the VGG16
                conv base forward (batch 50, as extract_features) and the small convnet's
                train step (batch 32, in-memory batches)
  vgg_batch     VGG16 conv base forward at inference batch 25/50/100/200
  val_batch     the small convnet's evaluation (the per-epoch validation pass) at batch
                20/32/50/100/200/400
  jit           the small convnet's train step with jit_compile False/True, in
                mixed_bfloat16 and float32

The machine is shared, so every figure is a ratio to a baseline timed in the same run:
configurations are interleaved (round-robin, `--rounds` times), each timing is repeated,
the median is kept, and the load average is recorded beside every timing.

Run from the project root, as a module:

    python -m benchmarks.speed_probes --rounds 2 --out benchmarks/results/<cpu-kind>-<date>-speed-probes.json   # ~20 min on 2 busy cores
    python -m benchmarks.speed_probes --families jit,val_batch --rounds 2 --out /tmp/p.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import benchmark  # machine_info, pick_files, decode_subset

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = benchmark.SHARED / "weights" / "vgg16_imagenet_notop.weights.h5"
FAMILIES = ("runtime", "vgg_batch", "val_batch", "jit")
RUNTIME_CONFIGS = {  # name -> (intra, inter) threads or None for TF's default, extra env
    "default": (None, {}),
    "intra2_inter1": ((2, 1), {}),
    "intra1_inter1": ((1, 1), {}),
    "intra1_inter2": ((1, 2), {}),
    "onednn_off": (None, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    "onednn_frozen_weights": (None, {"TF_ONEDNN_ASSUME_FROZEN_WEIGHTS": "1"}),
    "onednn_system_allocator": (None, {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1"}),
    "onednn_caller_thread": (None, {"TF_ONEDNN_THREADPOOL_USE_CALLER_THREAD": "1"}),
}
VGG_BATCHES = (25, 50, 100, 200)
VAL_BATCHES = (20, 32, 50, 100, 200, 400)
TRAIN_BATCH = 32  # train_custom_aug's batch
VGG_STAGE_BATCH = 50  # extract_features.batch_size


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--families", default=",".join(FAMILIES), help="comma-separated subset of: " + ", ".join(FAMILIES))
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the configurations (default 3)")
    p.add_argument("--images", type=int, default=400, help="real images decoded, half cats half dogs (default 400)")
    p.add_argument("--vgg-images", type=int, default=200, help="images per VGG16 timing (default 200, a multiple of every batch)")
    p.add_argument("--runtime-vgg-images", type=int, default=100, help="images per VGG16 timing in the runtime family (default 100)")
    p.add_argument("--runtime-timeout", type=int, default=150, help="seconds before a runtime-family process is abandoned (default 150)")
    p.add_argument("--precision", default="auto", help="auto (as train.precision), float32 or mixed_bfloat16")
    p.add_argument("--images-dir", type=Path, default=benchmark.IMAGES_DIR)
    p.add_argument("--weights", type=Path, default=WEIGHTS, help=f"VGG16 notop Keras weights (default {WEIGHTS})")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in args.families if f not in FAMILIES]
    if unknown:
        p.error(f"--families: unknown {unknown[0]!r}; known: {', '.join(FAMILIES)}")
    if args.rounds < 1 or args.images < 2 or args.vgg_images < 1:
        p.error("--rounds, --vgg-images must be >= 1 and --images >= 2")
    return args


# ---------------------------------------------------------------- timing helpers (worker side)

def timed(fn) -> dict:
    load = os.getloadavg()[0]
    t = time.perf_counter()
    fn()
    return {"seconds": time.perf_counter() - t, "load_1min": load}


def rate_summary(n: int, timings: list[dict]) -> dict:
    rates = [n / t["seconds"] for t in timings]
    return {
        "images": n,
        "images_per_second": round(statistics.median(rates), 2),
        "images_per_second_each": [round(r, 2) for r in rates],
        "load_1min_each": [round(t["load_1min"], 2) for t in timings],
    }


def load_arrays(spec: dict):
    import numpy as np

    with np.load(spec["arrays"]) as data:
        return data["images"], data["labels"]


def set_policy(precision: str) -> str:
    import keras

    from stages.lib.runtime import resolve_precision

    policy = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(policy)
    return policy


def vgg_forward_timer(spec: dict, images, batch: int):
    """A callable running the VGG16 extractor (preprocessing + conv base) over `images` as
    extract_features does: eval_batches -> one traced step per batch, output to NumPy.
    Called with other images (e.g. one batch, to warm up), it runs over those."""
    import tensorflow as tf

    from stages.lib import datasets, models

    extractor = models.vgg16_extractor(models.vgg16_conv_base(spec["weights"], images.shape[1]), "imagenet")
    step = tf.function(lambda x: extractor(x, training=False))

    def run(over=images):
        for x in datasets.eval_batches(over, None, batch):
            step(x).numpy()

    return run


def convnet_fit_timer(images, labels, batch: int, jit_compile: bool | str = "auto", dropout: float = 0.5):
    """A callable fitting the small convnet one epoch on in-memory batches (the study's
    training_batches over un-augmented images: the train step's compute bound)."""
    import keras

    from stages.lib import datasets
    from stages.lib.models import custom_convnet

    model = custom_convnet(images.shape[1], dropout)
    model.compile(optimizer=keras.optimizers.RMSprop(1e-4), loss="binary_crossentropy", metrics=["accuracy"],
                  jit_compile=jit_compile)
    make_batch = datasets.plain_inputs(images)

    def run():
        ds, steps = datasets.training_batches(len(images), labels, batch, 42, 1, make_batch)
        model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)

    return run


# ---------------------------------------------------------------- families (each one worker process)

def worker_runtime(spec: dict) -> dict:
    """One runtime configuration (threads / env applied before TF starts)."""
    import tensorflow as tf

    threads = spec.get("threads")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads[0])
        tf.config.threading.set_inter_op_parallelism_threads(threads[1])
    policy = set_policy(spec["precision"])
    images, labels = load_arrays(spec)
    vgg_images = images[: spec["runtime_vgg_images"]]
    vgg = vgg_forward_timer(spec, vgg_images, VGG_STAGE_BATCH)
    fit = convnet_fit_timer(images, labels, TRAIN_BATCH)
    vgg(vgg_images[:VGG_STAGE_BATCH]), fit()  # warm-up: tracing, oneDNN primitive caches
    vgg_t, fit_t = [], []
    for _ in range(2):
        vgg_t.append(timed(vgg))
        fit_t.append(timed(fit))
    return {
        "policy": policy,
        "threads_intra_inter": [tf.config.threading.get_intra_op_parallelism_threads(),
                                tf.config.threading.get_inter_op_parallelism_threads()],
        "vgg16_forward": rate_summary(len(vgg_images), vgg_t),
        "convnet_train": rate_summary(len(images), fit_t),
    }


def interleaved(configs: dict, rounds: int, warm_up: dict | None = None) -> dict[str, list[dict]]:
    """Warm each callable up once (or with warm_up[name]), then time them round-robin
    `rounds` times."""
    for name, run in configs.items():
        (warm_up or {}).get(name, run)()
    timings = {name: [] for name in configs}
    for _ in range(rounds):
        for name, run in configs.items():
            timings[name].append(timed(run))
    return timings


def worker_vgg_batch(spec: dict) -> dict:
    policy = set_policy(spec["precision"])
    images, _ = load_arrays(spec)
    images = images[: spec["vgg_images"]]
    timers = {f"batch_{b}": vgg_forward_timer(spec, images, b) for b in VGG_BATCHES}
    # Warm up on one batch of each size: the traced step and oneDNN's primitives for it.
    warm_up = {f"batch_{b}": (lambda run=timers[f"batch_{b}"], b=b: run(images[:b])) for b in VGG_BATCHES}
    timings = interleaved(timers, spec["rounds"], warm_up)
    return {"policy": policy, "configs": {k: rate_summary(len(images), v) for k, v in timings.items()}}


def worker_val_batch(spec: dict) -> dict:
    """model.evaluate on eval_batches, as fit's per-epoch validation pass; one compiled model
    per batch size (same weights), so that no traced shape is shared."""
    from stages.lib import datasets
    from stages.lib.models import custom_convnet
    from stages.lib.training import compile_binary

    policy = set_policy(spec["precision"])
    images, labels = load_arrays(spec)
    reference = custom_convnet(images.shape[1], 0.5)
    timers = {}
    for b in VAL_BATCHES:
        model = custom_convnet(images.shape[1], 0.5)
        model.set_weights(reference.get_weights())
        compile_binary(model, 1e-4)
        ds = datasets.eval_batches(images, labels, b)
        timers[f"batch_{b}"] = lambda model=model, ds=ds: model.evaluate(ds, verbose=0)
    timings = interleaved(timers, spec["rounds"])
    return {"policy": policy, "configs": {k: rate_summary(len(images), v) for k, v in timings.items()}}


def worker_jit(spec: dict) -> dict:
    """The train step with and without XLA, in bf16 and float32: each model is built under its
    own policy (a policy applies to the layers built after it is set)."""
    import keras

    images, labels = load_arrays(spec)
    timers = {}
    for precision in ("mixed_bfloat16", "float32"):
        keras.mixed_precision.set_global_policy(precision)
        for jit in (False, True):
            keras.utils.set_random_seed(42)
            timers[f"{precision}:jit_{str(jit).lower()}"] = convnet_fit_timer(images, labels, TRAIN_BATCH, jit_compile=jit)
    timings = interleaved(timers, spec["rounds"])
    return {"configs": {k: rate_summary(len(images), v) for k, v in timings.items()}}


WORKERS = {"runtime": worker_runtime, "vgg_batch": worker_vgg_batch, "val_batch": worker_val_batch, "jit": worker_jit}


def run_worker(spec: dict) -> dict:
    import keras

    keras.utils.set_random_seed(42)
    return WORKERS[spec["family"]](spec)


# ---------------------------------------------------------------- parent

def launch(spec: dict, extra_env: dict | None = None, timeout: int = 900) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    cmd = [sys.executable, "-m", "benchmarks.speed_probes", "--out", os.devnull, "--worker", json.dumps(spec)]
    t = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s", "timed_out_seconds": timeout}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(benchmark.RESULT_TAG):
            return {**json.loads(line[len(benchmark.RESULT_TAG):]), "process_wall_seconds": round(time.perf_counter() - t, 1)}
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
    return {"error": f"exit code {done.returncode}", "output_tail": tail}


def ratios_to(configs: dict, baseline: str, key: str | None = None) -> dict:
    def rate(row):
        return (row[key] if key else row)["images_per_second"]

    base = rate(configs[baseline])
    return {name: round(rate(row) / base, 3) for name, row in configs.items()}


def family_runtime(spec: dict, rounds: int, timeout: int) -> dict:
    """Each configuration in its own process, round-robin `rounds` times; per config the
    median over all its timings (2 per process). A configuration whose process outlasts
    `timeout` seconds is abandoned and not repeated: its process time is then a bound."""
    raw = {name: [] for name in RUNTIME_CONFIGS}
    for r in range(rounds):
        for name, (threads, env) in RUNTIME_CONFIGS.items():
            if any("timed_out_seconds" in x for x in raw[name]):
                continue
            result = launch({**spec, "family": "runtime", "threads": threads}, env, timeout)
            raw[name].append(result)
            print(f"  runtime round {r + 1} {name:26s} " + (
                f"vgg16 {result['vgg16_forward']['images_per_second']:.1f}/s, convnet {result['convnet_train']['images_per_second']:.1f}/s"
                if "error" not in result else f"FAILED {result['error']}\n{result.get('output_tail', '')}"), flush=True)
    configs = {}
    for name, results in raw.items():
        ok = [r for r in results if "error" not in r]
        if not ok:
            configs[name] = {k: v for k, v in results[-1].items() if k in ("error", "output_tail", "timed_out_seconds")}
            continue
        threads, env = RUNTIME_CONFIGS[name]
        row = {"threads_asked": threads, "env": env, "threads_intra_inter": ok[0]["threads_intra_inter"], "policy": ok[0]["policy"]}
        for workload in ("vgg16_forward", "convnet_train"):
            rates = [x for r in ok for x in r[workload]["images_per_second_each"]]
            loads = [x for r in ok for x in r[workload]["load_1min_each"]]
            row[workload] = {"images": ok[0][workload]["images"], "images_per_second": round(statistics.median(rates), 2),
                             "images_per_second_each": rates, "load_1min_each": loads}
        configs[name] = row
    good = {k: v for k, v in configs.items() if "error" not in v}
    walls = [r["process_wall_seconds"] for r in raw["default"] if "process_wall_seconds" in r]
    return {
        "configs": configs,
        "default_process_wall_seconds": walls,
        "timed_out": {k: {"after_seconds": v["timed_out_seconds"],
                          "default_process_over_timeout_at_most": round(max(walls) / v["timed_out_seconds"], 3) if walls else None}
                      for k, v in configs.items() if "timed_out_seconds" in v},
        "ratio_to_default": {w: ratios_to(good, "default", w) for w in ("vgg16_forward", "convnet_train")} if "default" in good else None,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(benchmark.RESULT_TAG + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return 0
    if not args.images_dir.is_dir() or not args.weights.is_file():
        print(f"error: real images ({args.images_dir}) or VGG16 weights ({args.weights}) not found", file=sys.stderr)
        return 2
    from stages.lib.params import load_params

    image_size = load_params("split", path=ROOT / "params.yaml")["split"]["image_size"]
    report = {"machine": benchmark.machine_info(), "settings": {
        "images": args.images, "vgg_images": args.vgg_images, "image_size": image_size, "precision_asked": args.precision,
        "runtime_vgg_images": args.runtime_vgg_images, "rounds": args.rounds, "train_batch": TRAIN_BATCH, "vgg_stage_batch": VGG_STAGE_BATCH, "weights": str(args.weights),
        "note": "figures are medians of interleaved timings; ratios compare configurations timed in the same run",
    }, "families": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="catsdogs-probes-") as tmp:
        arrays = Path(tmp) / "arrays.npz"
        report["data"] = benchmark.decode_subset(benchmark.pick_files(args.images_dir, args.images), image_size, arrays)
        spec = {"arrays": str(arrays), "weights": str(args.weights), "precision": args.precision,
                "vgg_images": args.vgg_images,
                "runtime_vgg_images": args.runtime_vgg_images, "rounds": args.rounds}
        for family in args.families:
            t = time.perf_counter()
            print(f"{family} ...", flush=True)
            if family == "runtime":
                result = family_runtime(spec, args.rounds, args.runtime_timeout)
            else:
                result = launch({**spec, "family": family})
                if "error" not in result:
                    baseline = {"vgg_batch": f"batch_{VGG_STAGE_BATCH}", "val_batch": "batch_20",
                                "jit": "mixed_bfloat16:jit_false"}[family]
                    result["ratio_to_" + baseline] = ratios_to(result["configs"], baseline)
                    if family == "jit":
                        result["float32_jit_true_over_jit_false"] = round(
                            result["configs"]["float32:jit_true"]["images_per_second"]
                            / result["configs"]["float32:jit_false"]["images_per_second"], 3)
            result["family_wall_seconds"] = round(time.perf_counter() - t, 1)
            report["families"][family] = result
            print(json.dumps({k: v for k, v in result.items() if k.startswith("ratio") or k.endswith("jit_false") or k == "error"}), flush=True)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    report["load_average_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if any("error" in f for f in report["families"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
