"""Throughput benchmark of the study, on the real Kaggle images.

Measures, in one run, each configuration in a fresh subprocess (so that a precision policy
or a traced graph never leaks from one to the next):

  project_aug    the custom convnet trained on the project's input pipeline: uint8 arrays
                 decoded once, `datasets.training_batches` + `augmented_images` (Chollet's
                 augmentation from params.yaml)
  project_plain  the same with `plain_inputs` (augmentation off)
  seed_style     the seed notebook's pipeline: legacy ImageDataGenerator(rescale=1/255,
                 Chollet's augmentation).flow_from_directory, decoding JPEGs every epoch;
                 the model is the same convnet minus its Rescaling layer (the generator
                 rescales), so the compute per image is the same
  in_memory      model.fit on batches of one float32 tensor already in memory, no
                 augmentation: the compute bound of the training step
  vgg16_forward  the VGG16 conv base (random weights: speed does not depend on them),
                 forward pass only, at the split's image size

each under float32 and mixed_bfloat16. Training throughput is images per second of an
epoch, the median over the measured epochs after warm-up epochs. Then it reports
project/compute-bound and project/seed-style, checks them against the goal (project's
pipeline within 10% of the compute bound and at least 3x the seed-style one), and with
--repro DIR times a `dvc repro` in DIR stage by stage and a no-op `dvc repro` after it.

Run from the project root, as a module:

    python -m benchmarks.benchmark --out benchmark.json               # everything: ~40 min on 2 idle cores
    python -m benchmarks.benchmark --quick --out quick.json           # a smoke check, a few minutes
    python -m benchmarks.benchmark --configs project_aug:float32,in_memory:float32 --out f32.json
    python -m benchmarks.benchmark --configs none --noop-only --repro ../study --out noop.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IMAGES_DIR = SHARED / "datasets" / "dogs-vs-cats" / "train"
PIPELINES = ("project_aug", "project_plain", "seed_style", "in_memory", "vgg16_forward")
PRECISIONS = ("float32", "mixed_bfloat16")
RESULT_TAG = "BENCHMARK_RESULT "
GOAL_OF_COMPUTE_BOUND = 0.9  # project's pipeline within 10% of the compute bound
GOAL_OVER_SEED = 3.0  # and at least 3x the seed-style pipeline
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
SEED_SETTINGS = dict(
    rescale=1.0 / 255,
    rotation_range=40,
    width_shift_range=0.2,
    height_shift_range=0.2,
    shear_range=0.2,
    zoom_range=0.2,
    horizontal_flip=True,
)
SEED_SETTINGS_JSON = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in SEED_SETTINGS.items()}


# ---------------------------------------------------------------- command line

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--images", type=int, default=400, help="real images per training config, half cats half dogs (default 400)")
    p.add_argument("--vgg-images", type=int, default=96, help="images per VGG16 forward pass (default 96)")
    p.add_argument("--epochs", type=int, default=3, help="measured epochs (or VGG16 passes) per config (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured epochs first (tracing, caches; default 1)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32, as train_custom_aug)")
    p.add_argument("--image-size", type=int, default=None, help="pixels per side (default: split.image_size, 150)")
    p.add_argument(
        "--configs",
        default="all",
        help="comma-separated PIPELINE or PIPELINE:PRECISION, 'all' or 'none'; pipelines: "
        + ", ".join(PIPELINES) + "; precisions: " + ", ".join(PRECISIONS),
    )
    p.add_argument("--images-dir", type=Path, default=IMAGES_DIR, help=f"Kaggle cat.N.jpg/dog.N.jpg folder (default {IMAGES_DIR})")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per config before it is abandoned (default 3600)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (16 images, VGG16 4, batch 8, 1+1 epochs; overrides those options): a smoke check, not a measurement")
    p.add_argument("--repro", type=Path, metavar="DIR", help="also time `dvc repro` per stage in DIR (a configured project)")
    p.add_argument("--repro-force", action="store_true", help="with --repro: `dvc repro --force` (rerun every stage)")
    p.add_argument("--noop-only", action="store_true", help="with --repro: only time a no-op `dvc repro`")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one config, print its result
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.vgg_images, args.epochs, args.warmup, args.batch = 16, 4, 1, 1, 8
    if args.noop_only and not args.repro:
        p.error("--noop-only needs --repro DIR")
    for name in ("images", "vgg_images", "epochs", "batch", "timeout"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.images < 2:
        p.error("--images must be >= 2 (one cat, one dog)")
    return args


def parse_configs(text: str) -> list[tuple[str, str]]:
    """'all' | 'none' | 'in_memory,project_aug:float32' -> [(pipeline, precision), ...]."""
    if text == "all":
        return [(p, q) for p in PIPELINES for q in PRECISIONS]
    if text in ("none", ""):
        return []
    configs = []
    for item in text.split(","):
        pipeline, _, precision = item.strip().partition(":")
        if pipeline not in PIPELINES or (precision and precision not in PRECISIONS):
            raise SystemExit(f"error: unknown config {item!r}; pipelines: {', '.join(PIPELINES)}; precisions: {', '.join(PRECISIONS)}")
        configs += [(pipeline, q) for q in ([precision] if precision else PRECISIONS)]
    return configs


# ---------------------------------------------------------------- machine

def machine_info() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.M)
    flags = set(flags.group(1).split()) if flags else set()
    info = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_flags": {f: f in flags for f in CPU_FLAGS},
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for package in ("tensorflow", "keras", "numpy", "scipy"):
        info[f"{package}_version"] = package_version(package)
    return info


def package_version(name: str) -> str | None:
    from importlib import metadata

    for dist in (name, f"{name}-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return None


# ---------------------------------------------------------------- data (parent, no TensorFlow)

def pick_files(images_dir: Path, n: int) -> list[Path]:
    """The first n/2 cats and n/2 dogs by Kaggle id (cat.0.jpg, dog.0.jpg, ...)."""
    files = []
    for label, count in (("cat", n // 2), ("dog", n - n // 2)):
        found = sorted(images_dir.glob(f"{label}.*.jpg"), key=lambda f: int(f.name.split(".")[1]))
        if len(found) < count:
            raise SystemExit(f"error: {images_dir} has {len(found)} {label} images, {count} needed")
        files += found[:count]
    return files


def decode_subset(files: list[Path], size: int, out: Path) -> dict:
    """Decode once to uint8 (N, size, size, 3), as `split` does; save images and labels."""
    import numpy as np

    from stages.lib.images import decode_resized

    t = time.perf_counter()
    images = np.stack([decode_resized(f, size) for f in files])
    labels = np.array([f.name.startswith("dog") for f in files], dtype=np.uint8)
    np.savez(out, images=images, labels=labels)
    return {"images": len(files), "decode_seconds": round(time.perf_counter() - t, 2)}


def seed_folder(files: list[Path], root: Path) -> Path:
    """train/cats and train/dogs holding symlinks to the same images (flow_from_directory)."""
    train = root / "train"
    for f in files:
        folder = train / ("dogs" if f.name.startswith("dog") else "cats")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f.name).symlink_to(f.resolve())
    return train


# ---------------------------------------------------------------- one config (worker)

def run_worker(spec: dict) -> dict:
    """Run one (pipeline, precision) in this fresh process; returns its measurements."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    keras.utils.set_random_seed(42)
    keras.mixed_precision.set_global_policy(spec["precision"])
    with np.load(spec["arrays"]) as data:
        images, labels = data["images"], data["labels"]
    if spec["pipeline"] == "vgg16_forward":  # repeats the images if it needs more
        return vgg16_forward(np.resize(images, (spec["vgg_images"], *images.shape[1:])), spec)
    return train_throughput(images, labels, spec)


def convnet(spec: dict, rescaling: bool):
    """The study's custom convnet (train_custom_aug's dropout); without its Rescaling layer
    for an input pipeline that already rescales, so that the compute stays the same."""
    import keras

    from stages.lib.models import custom_convnet
    from stages.lib.training import compile_binary

    model = custom_convnet(spec["image_size"], spec["dropout"])
    if not rescaling:
        inputs = keras.Input(model.input_shape[1:], name="image")
        x = inputs
        for layer in model.layers[2:]:  # skip InputLayer and Rescaling: a plain chain
            x = layer(x)
        model = keras.Model(inputs, x, name="custom_convnet_no_rescaling")
    compile_binary(model, spec["learning_rate"])
    return model


def epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds, self.losses = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.started)
            self.losses.append(float((logs or {}).get("loss", float("nan"))))

    return EpochTimer()


def train_throughput(images, labels, spec: dict) -> dict:
    """Fit warmup + epochs epochs on this config's input pipeline; images/s per epoch."""
    n, batch, epochs = len(images), spec["batch"], spec["warmup"] + spec["epochs"]
    pipeline, extra = spec["pipeline"], {}
    model = convnet(spec, rescaling=pipeline != "seed_style")
    timer = epoch_timer()
    fit = dict(epochs=epochs, callbacks=[timer], verbose=0)
    if pipeline in ("project_aug", "project_plain"):
        data, steps = project_batches(images, labels, spec, epochs, augment=pipeline == "project_aug")
        model.fit(data, steps_per_epoch=steps, shuffle=False, **fit)
    elif pipeline == "seed_style":
        try:
            data = seed_generator(spec)
        except ImportError as e:
            return {"skipped": f"Keras' legacy ImageDataGenerator is unavailable: {e}"}
        extra = {"generator": "keras.src.legacy.preprocessing.image.ImageDataGenerator", "settings": SEED_SETTINGS_JSON,
                 "workers": data.workers, "use_multiprocessing": data.use_multiprocessing}
        model.fit(data, steps_per_epoch=len(data), **fit)
    elif pipeline == "in_memory":
        model.fit(in_memory_batches(images, labels, batch), steps_per_epoch=math.ceil(n / batch), **fit)
    else:
        raise ValueError(pipeline)
    measured = timer.seconds[spec["warmup"]:]
    rates = [n / s for s in measured]
    return {
        "images": n,
        "batch": batch,
        "warmup_epochs": spec["warmup"],
        "epoch_seconds": [round(s, 3) for s in timer.seconds],
        "images_per_second_per_epoch": [round(r, 2) for r in rates],
        "images_per_second": round(statistics.median(rates), 2),
        "final_loss": round(timer.losses[-1], 4),
        **extra,
    }


def in_memory_batches(images, labels, batch: int):
    """The compute bound's input: batches sliced from one float32 tensor already in memory,
    in a fixed order, no augmentation, tf.data autotune off as in the project's pipeline, so
    that only the input work differs. (Plain `model.fit(x, y)` goes through Keras' array
    adapter, which turns autotune on: the project found that halves training speed on 2
    cores, and a bound must not be slowed by its own input threads.)"""
    import tensorflow as tf

    x, y = tf.constant(images.astype("float32")), tf.constant(labels.astype("float32"))
    options = tf.data.Options()
    options.autotune.enabled = False
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat().prefetch(2).with_options(options)


def project_batches(images, labels, spec: dict, epochs: int, augment: bool):
    """The project's training input: datasets.training_batches over the decoded arrays."""
    from stages.lib import datasets

    make_batch = datasets.augmented_images(images, spec["seed"], spec["augmentation"]) if augment else datasets.plain_inputs(images)
    return datasets.training_batches(len(images), labels, spec["batch"], spec["seed"], epochs, make_batch)


def seed_generator(spec: dict):
    """The seed notebook's generator over train/cats, train/dogs (JPEGs decoded per epoch)."""
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    size = spec["image_size"]
    return ImageDataGenerator(**SEED_SETTINGS).flow_from_directory(
        spec["seed_dir"], target_size=(size, size), batch_size=spec["batch"], class_mode="binary", seed=42
    )


def vgg16_forward(images, spec: dict) -> dict:
    """The VGG16 conv base's forward pass over `images`: warmup + epochs passes, images/s."""
    import keras
    import tensorflow as tf

    size = spec["image_size"]
    conv_base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
    forward = tf.function(lambda x: conv_base(x, training=False))
    batches = [tf.constant(images[i : i + spec["batch"]].astype("float32")) for i in range(0, len(images), spec["batch"])]
    seconds = []
    for _ in range(spec["warmup"] + spec["epochs"]):
        t = time.perf_counter()
        for x in batches:
            forward(x).numpy()
        seconds.append(time.perf_counter() - t)
    rates = [len(images) / s for s in seconds[spec["warmup"]:]]
    return {
        "images": len(images),
        "batch": spec["batch"],
        "warmup_passes": spec["warmup"],
        "pass_seconds": [round(s, 3) for s in seconds],
        "images_per_second_per_pass": [round(r, 2) for r in rates],
        "images_per_second": round(statistics.median(rates), 2),
        "output_dtype": str(conv_base.output.dtype),
    }


# ---------------------------------------------------------------- orchestration

def seed_style_unavailable() -> str | None:
    """Why the legacy ImageDataGenerator cannot run here, or None."""
    keras = importlib.util.find_spec("keras")  # looked up on disk: the parent never imports TensorFlow
    legacy = Path(keras.origin).parent / "src" / "legacy" / "preprocessing" / "image.py" if keras and keras.origin else None
    if legacy is None or not legacy.is_file() or "class ImageDataGenerator" not in legacy.read_text():
        return "keras.src.legacy.preprocessing.image.ImageDataGenerator is not in this Keras"
    if importlib.util.find_spec("scipy") is None:
        return "scipy is not installed: Keras' legacy ImageDataGenerator needs scipy.ndimage for its affine augmentation (pip install scipy)"
    return None


def launch(spec: dict, timeout: int) -> dict:
    """Run one config in a fresh Python process; its result, or the error it died with."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "benchmarks.benchmark", "--out", os.devnull, "--worker", json.dumps(spec)]
    t = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    wall = round(time.perf_counter() - t, 1)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return {**json.loads(line[len(RESULT_TAG):]), "process_wall_seconds": wall}
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
    return {"error": f"exit code {done.returncode}", "output_tail": tail, "process_wall_seconds": wall}


def run_configs(configs: list[tuple[str, str]], args, arrays: Path, seed_dir: Path, params: dict) -> dict:
    results: dict[str, dict] = {}
    for pipeline, precision in configs:
        key = f"{pipeline}:{precision}"
        reason = seed_style_unavailable() if pipeline == "seed_style" else None
        if reason:
            results[key] = {"skipped": reason}
        else:
            spec = {
                "pipeline": pipeline,
                "precision": precision,
                "arrays": str(arrays),
                "seed_dir": str(seed_dir),
                "image_size": args.image_size,
                "batch": args.batch,
                "epochs": args.epochs,
                "warmup": args.warmup,
                "vgg_images": args.vgg_images,
                **params,
            }
            results[key] = launch(spec, args.timeout)
        print(f"  {key:32s} {describe(results[key])}", flush=True)
    return results


def describe(result: dict) -> str:
    if "images_per_second" in result:
        return f"{result['images_per_second']:8.2f} images/s"
    return result.get("skipped") or f"FAILED: {result.get('error')}\n{result.get('output_tail', '')}"


def rate(results: dict, pipeline: str, precision: str) -> float | None:
    return results.get(f"{pipeline}:{precision}", {}).get("images_per_second")


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def comparisons(results: dict) -> dict:
    """Per precision: project/compute-bound, project/seed-style, and whether the goal is met."""
    out = {}
    for precision in PRECISIONS:
        project, plain = rate(results, "project_aug", precision), rate(results, "project_plain", precision)
        bound, seed = rate(results, "in_memory", precision), rate(results, "seed_style", precision)
        of_bound, over_seed = ratio(project, bound), ratio(project, seed)
        row = {
            "project_aug_over_in_memory": of_bound,
            "project_plain_over_in_memory": ratio(plain, bound),
            "project_aug_over_seed_style": over_seed,
            "goal_within_10pct_of_compute_bound": None if of_bound is None else of_bound >= GOAL_OF_COMPUTE_BOUND,
            "goal_3x_seed_style": None if over_seed is None else over_seed >= GOAL_OVER_SEED,
        }
        if any(v is not None for v in row.values()):
            out[precision] = row
    for pipeline in PIPELINES:
        bf16_over_f32 = ratio(rate(results, pipeline, "mixed_bfloat16"), rate(results, pipeline, "float32"))
        if bf16_over_f32 is not None:
            out.setdefault("mixed_bfloat16_over_float32", {})[pipeline] = bf16_over_f32
    return out


# ---------------------------------------------------------------- dvc repro

def dvc_command() -> str:
    local = Path(sys.executable).with_name("dvc")
    return str(local) if local.exists() else "dvc"


def timed_repro(directory: Path, force: bool = False) -> dict:
    """Run `dvc repro` in directory, timestamping its output: a stage's wall seconds run
    from its "Running stage" line to the next stage's (or to the end), so they include
    DVC's hashing and caching of that stage's outputs."""
    cmd = [dvc_command(), "repro"] + (["--force"] if force else [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DVC_NO_ANALYTICS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    marks: list[tuple[str, float]] = []
    tail: list[str] = []
    with subprocess.Popen(cmd, cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            tail = (tail + [line.rstrip()])[-20:]
            m = re.match(r"Running stage '([^']+)'", line)
            if m:
                marks.append((m.group(1), time.perf_counter()))
    total = time.perf_counter() - started
    ends = [t for _, t in marks[1:]] + [started + total]
    stages = {name: round(end - t, 2) for (name, t), end in zip(marks, ends)}
    result = {"command": " ".join(cmd[1:]), "exit_code": proc.returncode, "wall_seconds": round(total, 2), "stages_run": list(stages), "stage_seconds": stages}
    if marks:
        result["before_first_stage_seconds"] = round(marks[0][1] - started, 2)
    if proc.returncode != 0:
        result["output_tail"] = "\n".join(tail)
    return result


def repro_timings(directory: Path, force: bool, noop_only: bool) -> dict:
    if not (directory / "dvc.yaml").is_file():
        return {"error": f"{directory} has no dvc.yaml"}
    out = {"directory": str(directory.resolve())}
    if not noop_only:
        out["repro"] = timed_repro(directory, force)
    out["noop_repro"] = timed_repro(directory)
    return out


# ---------------------------------------------------------------- report

def summary(report: dict) -> str:
    m = report["machine"]
    flags = ", ".join(f for f, on in m["cpu_flags"].items() if on) or "none of " + ", ".join(CPU_FLAGS)
    lines = [
        f"machine: {m['cpu_model']}, {m['cpus_usable']} usable CPUs ({flags}), TensorFlow {m['tensorflow_version']}, {m['date']}",
        f"load average at start {m['load_average_at_start']}, at end {report['load_average_at_end']}: a loaded machine gives noisy numbers",
    ]
    if report["results"]:
        s = report["settings"]
        lines.append(f"throughput, images/s ({s['images']} images, VGG16 {s['vgg_images']}, batch {s['batch']}, median of {s['epochs']} after {s['warmup']} warm-up):")
        lines.append(f"  {'':16s}" + "".join(f"{q:>16s}" for q in PRECISIONS))
        for pipeline in PIPELINES:
            cells = [report["results"].get(f"{pipeline}:{q}") for q in PRECISIONS]
            if any(cells):
                lines.append(f"  {pipeline:16s}" + "".join(f"{cell_text(c):>16s}" for c in cells))
    for precision, row in report["comparisons"].items():
        if precision == "mixed_bfloat16_over_float32":
            lines.append("mixed_bfloat16 / float32: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
            continue
        lines.append(
            f"{precision}: project_aug = {fmt(row['project_aug_over_in_memory'])} x compute bound "
            f"(goal >= {GOAL_OF_COMPUTE_BOUND}: {verdict(row['goal_within_10pct_of_compute_bound'])}), "
            f"{fmt(row['project_aug_over_seed_style'])} x seed-style (goal >= {GOAL_OVER_SEED:g}: {verdict(row['goal_3x_seed_style'])}); "
            f"project_plain = {fmt(row['project_plain_over_in_memory'])} x compute bound"
        )
    if "dvc" in report:
        d = report["dvc"]
        if "error" in d:
            lines.append(f"dvc: {d['error']}")
        for key, label in (("repro", ""), ("noop_repro", "no-op ")):
            if key in d:
                r = d[key]
                stages = ", ".join(f"{k} {v:.1f}s" for k, v in r["stage_seconds"].items()) or "no stage ran"
                lines.append(f"{label}dvc {r['command']} in {d['directory']}: {r['wall_seconds']:.1f} s, exit {r['exit_code']} ({stages})")
    return "\n".join(lines)


def cell_text(cell: dict | None) -> str:
    if not cell:
        return "-"
    if "images_per_second" in cell:
        return f"{cell['images_per_second']:.2f}"
    return "skipped" if "skipped" in cell else "failed"


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "NOT met")


def study_params(image_size: int | None) -> tuple[dict, int]:
    """train_custom_aug's dropout and learning rate, the augmentation, the seed, the size."""
    from stages.lib.params import load_params

    params = load_params("split", "train", "augmentation", "train_custom_aug", path=ROOT / "params.yaml")
    cfg = params["train_custom_aug"]
    picked = {
        "seed": params["train"]["seed"],
        "augmentation": params["augmentation"],
        "dropout": cfg["dropout"],
        "learning_rate": cfg["learning_rate"],
    }
    return picked, image_size or params["split"]["image_size"]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(RESULT_TAG + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return 0
    configs = parse_configs(args.configs)
    params, args.image_size = study_params(args.image_size)
    report = {
        "machine": machine_info(),
        "settings": {
            "quick": args.quick,
            "images": args.images,
            "vgg_images": args.vgg_images,
            "epochs": args.epochs,
            "warmup": args.warmup,
            "batch": args.batch,
            "image_size": args.image_size,
            "configs": [f"{p}:{q}" for p, q in configs],
            "model": f"stages.models.custom_convnet(dropout={params['dropout']}), RMSprop {params['learning_rate']}",
            "augmentation": params["augmentation"],
            "seed_style_generator": SEED_SETTINGS_JSON,
            "note": "seed_style decodes JPEGs each epoch and its shear_range=0.2 is in degrees (Keras 3 legacy generator); the project's shear is 0.2 radians as Keras 2.0. The compute per image is the same.",
        },
        "goal": {"project_aug_over_in_memory_at_least": GOAL_OF_COMPUTE_BOUND, "project_aug_over_seed_style_at_least": GOAL_OVER_SEED},
    }
    print(f"benchmark: {len(configs)} configs, each in a fresh process", flush=True)
    if configs:
        if not args.images_dir.is_dir():
            print(f"error: real images not found at {args.images_dir} (--images-dir)", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="catsdogs-bench-") as tmp:
            files = pick_files(args.images_dir, args.images)
            report["data"] = decode_subset(files, args.image_size, Path(tmp) / "arrays.npz")
            seed_dir = seed_folder(files, Path(tmp) / "seed")
            report["results"] = run_configs(configs, args, Path(tmp) / "arrays.npz", seed_dir, params)
    else:
        report["results"] = {}
    report["comparisons"] = comparisons(report["results"])
    if args.repro:
        report["dvc"] = repro_timings(args.repro, args.repro_force, args.noop_only)
    report["load_average_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(summary(report))
    print(f"wrote {args.out}")
    failed = [k for k, v in report["results"].items() if "error" in v]
    return 1 if failed or report.get("dvc", {}).get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
