"""Smoke tests of benchmarks/benchmark.py (it runs, writes the JSON it promises, with positive
numbers; not a measurement: --quick, 16 images, one measured epoch), of the FLOP counter
(benchmarks/model_flops.py) and of benchmarks/study_benchmark.py on a synthetic study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT


def run_benchmark(*args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.benchmark", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
@pytest.mark.real_data
def test_quick_benchmark_writes_throughputs_and_ratios(tmp_path):
    out = tmp_path / "bench.json"
    # The two cheapest configs: the project's pipeline and the compute bound, float32.
    done = run_benchmark("--quick", "--configs", "project_aug:float32,in_memory:float32", "--out", str(out), timeout=170)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())

    assert {"machine", "settings", "goal", "data", "results", "comparisons", "load_average_at_end"} <= set(report)
    machine = report["machine"]
    assert machine["cpu_count"] > 0 and machine["tensorflow_version"]
    assert set(machine["cpu_flags"]) >= {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    assert report["settings"]["quick"] is True

    assert set(report["results"]) == {"project_aug:float32", "in_memory:float32"}
    for result in report["results"].values():
        assert result["images_per_second"] > 0
        assert len(result["epoch_seconds"]) == 2  # one warm-up, one measured
        assert all(s > 0 for s in result["epoch_seconds"])
    row = report["comparisons"]["float32"]
    assert row["project_aug_over_in_memory"] > 0
    assert isinstance(row["goal_within_10pct_of_compute_bound"], bool)
    assert row["project_aug_over_seed_style"] is None  # not run: reported as not measured
    assert "float32: project_aug = " in done.stdout


@pytest.mark.slow
def test_noop_repro_timing(tmp_path):
    """--repro times each stage of a real `dvc repro`, then a no-op one (no images needed)."""
    dvc = Path(sys.executable).with_name("dvc")
    if not dvc.exists():
        pytest.skip(f"dvc not installed beside {sys.executable}")
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([str(dvc), "init", "-q"], cwd=project, check=True)
    (project / "dvc.yaml").write_text(
        "stages:\n"
        "  first:\n    cmd: echo one > one.txt\n    outs: [one.txt]\n"
        "  second:\n    cmd: cat one.txt > two.txt\n    deps: [one.txt]\n    outs: [two.txt]\n"
    )
    out = tmp_path / "repro.json"
    done = run_benchmark("--configs", "none", "--repro", str(project), "--out", str(out), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    timings = json.loads(out.read_text())["dvc"]
    assert timings["repro"]["exit_code"] == 0
    assert timings["repro"]["stages_run"] == ["first", "second"]
    assert all(s > 0 for s in timings["repro"]["stage_seconds"].values())
    assert timings["noop_repro"]["stages_run"] == [] and timings["noop_repro"]["wall_seconds"] > 0


# ---------------------------------------------------------------- FLOP counter (benchmarks/model_flops.py)

def test_conv2d_and_dense_flops_are_twice_their_multiply_adds():
    import keras

    from benchmarks.model_flops import layer_costs

    inputs = keras.Input((10, 12, 3))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)  # valid padding: 8x10 outputs
    x = keras.layers.MaxPooling2D(2, name="pool")(x)  # 4x5x8, no multiply-adds
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(6, name="dense")(x)
    costs = {c.name: c for c in layer_costs(keras.Model(inputs, outputs))}

    assert costs["conv"].output_shape == (8, 10, 8)
    assert costs["conv"].forward == 2 * 8 * 10 * 3 * 3 * 3 * 8  # 2 * H * W * k * k * Cin * Cout
    assert costs["pool"].forward == 0 and costs["flatten"].forward == 0
    assert costs["dense"].forward == 2 * (4 * 5 * 8) * 6


def test_backward_pass_skips_frozen_prefix_and_first_input_gradient():
    import keras

    from benchmarks.model_flops import pass_flops

    inputs = keras.Input((8, 8, 2))
    frozen = keras.layers.Conv2D(4, 3, name="frozen")
    trained = keras.layers.Conv2D(4, 3, name="trained")
    frozen_after = keras.layers.Conv2D(4, 3, name="frozen_after")
    outputs = frozen_after(trained(frozen(inputs)))
    model = keras.Model(inputs, outputs)
    frozen.trainable = frozen_after.trainable = False
    f_frozen, f_trained, f_after = (2 * 6 * 6 * 9 * 2 * 4, 2 * 4 * 4 * 9 * 4 * 4, 2 * 2 * 2 * 9 * 4 * 4)

    flops = pass_flops(model)
    assert flops["forward"] == f_frozen + f_trained + f_after
    # frozen: nothing; trained: weight gradient only (nothing before it learns);
    # frozen_after: input gradient only (it must pass the gradient back to `trained`).
    assert flops["backward"] == f_trained + f_after
    assert flops["train_step"] == flops["forward"] + flops["backward"]


def test_vgg16_conv_base_counts_its_published_multiply_adds():
    """VGG16's conv layers at 224 px: 15.35 G multiply-adds (Simonyan & Zisserman's
    15.5 G minus the dense top), so 30.7 GFLOPs forward."""
    import keras

    from benchmarks.model_flops import pass_flops

    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(224, 224, 3))
    assert pass_flops(base)["forward"] == pytest.approx(30.7e9, rel=0.005)


def test_stage_phases_count_the_shared_bank():
    """extract_features: the features pass (blocks 1-4 then 5) and the bank (K copies of the
    training images through blocks 1-4 only); train_aug_frozen: its frozen block 5 once over
    K x train + validation bank activations, then the head's epochs; finetune: the epochs of
    block 5 + head on the bank, no frozen pass."""
    from benchmarks.study_benchmark import stage_phases

    models = {
        "extract_features": {"blocks_1_4": {"forward": 100}, "block_5": {"forward": 20}},
        "train_aug_frozen": {"model": {"forward": 125, "train_step": 135}, "frozen": {"forward": 20},
                             "trained": {"forward": 5, "train_step": 15}},
        "finetune": {"model": {"forward": 125, "train_step": 195}, "frozen": None,
                     "trained": {"forward": 25, "train_step": 70}},
    }
    bank = {"vgg16": {"augment_bank": 4}}
    params = {"train_aug_frozen": bank, "finetune": bank, "_current": {}}
    counts = {"train": 20, "validation": 6, "test": 5}

    extract = {"images": 31, "images_per_second": 15.5, "bank_images": 80, "bank_seconds": 8.0, "wall_seconds": 11.0}
    features, bank_pass = stage_phases("extract_features", extract, models, params, counts)
    assert (features["phase"], features["flops"], features["seconds"]) == ("features", 31 * 120, 2.0)
    assert (bank_pass["phase"], bank_pass["flops"], bank_pass["seconds"], bank_pass["images"]) == ("bank", 80 * 100, 8.0, 80)
    # K = 0: no bank phase.
    assert [p["phase"] for p in stage_phases("extract_features", {**extract, "bank_images": 0}, models, params, counts)] == ["features"]

    trained = {"epochs_run": 3, "seconds_per_epoch": 2.0, "frozen_seconds": 5.0, "wall_seconds": 12.0}
    frozen, epochs = stage_phases("train_aug_frozen", trained, models, params, counts)
    assert (frozen["phase"], frozen["flops"], frozen["seconds"], frozen["images"]) == ("frozen", (4 * 20 + 6) * 20, 5.0, 86)
    assert (epochs["phase"], epochs["flops"], epochs["seconds"]) == ("epochs", 3 * (20 * 15 + 6 * 5), 6.0)
    (finetune,) = stage_phases("finetune", {k: v for k, v in trained.items() if k != "frozen_seconds"}, models, params, counts)
    assert (finetune["phase"], finetune["flops"]) == ("epochs", 3 * (20 * 70 + 6 * 25))
    # vgg16.augment_bank: 0, the online path: the whole model on augmented images every epoch.
    online_params = {**params, "train_aug_frozen": {"vgg16": {"augment_bank": 0}}}
    (online,) = stage_phases("train_aug_frozen", trained, models, online_params, counts)
    assert online["flops"] == 3 * (20 * 135 + 6 * 125)


def test_old_format_metrics_are_recognised():
    from benchmarks.study_benchmark import old_format

    assert "old format" in old_format("extract_features", {"images": 4000, "images_per_second": 9.0})
    assert old_format("extract_features", {"images": 4000, "images_per_second": 9.0, "bank_images": 0}) is None
    for stage in ("train_aug_frozen", "finetune"):
        assert "own augmentation bank" in old_format(stage, {"epochs_run": 3, "bank_seconds": 7.0})
        assert old_format(stage, {"epochs_run": 3, "frozen_seconds": 7.0}) is None
    assert old_format("train_custom", {"epochs_run": 3}) is None


def synthetic_study(root: Path) -> None:
    """A finished study's record, new format: split's counts in metrics/runs/, each stage's run
    record where the study keeps it (study.py: every timed stage, an evaluate with per-model
    scores), a dvc.lock listing the VGG16 stages' params (augment
    bank of 2 copies) and a params.yaml edited since (no bank, float32 asked for)."""
    import yaml

    machine = {"cpu": "synthetic CPU", "cpu_kind": "avx512_bf16", "gpus": 0, "precision": "mixed_bfloat16"}
    epochs = {"train_custom": (30, 50.0), "train_custom_aug": (160, 55.0), "train_feature_clf": (30, 0.5),
              "train_aug_frozen": (30, 1.2), "finetune": (20, 70.0)}
    metrics = {
        "split": {**{s: {"cat": n, "dog": n} for s, n in (("train", 1000), ("validation", 500), ("test", 500),
                                                          ("extended", 7000))},
                  "duplicates_dropped": 3, "unused_images": 0},
        "extract_features": {"passes": [{"pass": "features", "images": 4000, "seconds": 400.0, "images_per_second": 10.0},
                                        {"pass": "bank", "images": 4000, "seconds": 300.0, "images_per_second": 13.3}],
                             "feature_size": 8192, "bank_bytes": 414720000, "wall_seconds": 720.0, **machine},
        **{stage: {"epochs_run": n, "seconds_per_epoch": s, "train_images_per_second": round(2000 / s, 1),
                   "wall_seconds": round(n * s + 10, 1), **machine} for stage, (n, s) in epochs.items()},
        # evaluate's "precision" is a score per model, not a compute precision.
        "evaluate": {stage: {"accuracy": 0.9, "precision": 0.9, "n": 1000} for stage in epochs},
    }
    metrics["train_aug_frozen"]["frozen_seconds"] = 60.0
    from stages.lib.study import FEATURES_RECORD_FILE, history_file, run_file

    def write(path, values):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(json.dumps(values))

    write(run_file("split"), metrics.pop("split"))  # where split writes it
    write(run_file("evaluate"), metrics.pop("evaluate"))
    write(FEATURES_RECORD_FILE, metrics.pop("extract_features"))
    for name, values in metrics.items():  # a training stage's record, in its history file
        write(history_file(name), {"history": [], "run": values})
    vgg16 = {"preprocessing": "imagenet", "augment_bank": 2}
    head = {"dense_units": 256, "dropout": 0.5}
    lock = {"schema": "2.0", "stages": {
        "train_aug_frozen": {"params": {"params.yaml": {"vgg16": vgg16, "train_aug_frozen": head}}},
        "finetune": {"params": {"params.yaml": {"vgg16": vgg16, "finetune.unfreeze": ["block5_conv1", "block5_conv2", "block5_conv3"]}}},
    }}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    params = {"split": {"image_size": 150}, "train": {"precision": "float32"}, "vgg16": {**vgg16, "augment_bank": 0},
              "train_custom": {"dropout": 0.0}, "train_custom_aug": {"dropout": 0.5}, "train_feature_clf": head,
              "train_aug_frozen": head, "finetune": {"unfreeze": ["block5_conv3"]}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def test_study_benchmark_on_a_synthetic_study(tmp_path):
    """benchmarks/study_benchmark.py on synthetic new-format metrics, with a very short matmul
    probe: every stage gets its phases, FLOPs, a compute bound at its recorded precision and
    wall / bound; the params come from dvc.lock before params.yaml."""
    synthetic_study(tmp_path)
    out = tmp_path / "study.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.study_benchmark", "--metrics", str(tmp_path / "metrics"),
                           "--lock", str(tmp_path / "dvc.lock"), "--params", str(tmp_path / "params.yaml"),
                           "--probe-seconds", "0.05", "--probe-rounds", "1", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stdout + done.stderr
    study = json.loads(out.read_text())["study"]

    assert study["image_size"] == 150 and study["images"] == {"train": 2000, "validation": 1000, "test": 1000}
    assert study["stages_skipped"] == {} and study["stages_without_metrics"] == []
    assert set(study["stages"]) == {"extract_features", "train_custom", "train_custom_aug", "train_feature_clf",
                                    "train_aug_frozen", "finetune", "evaluate"}
    # The recorded precision wins over train.precision (float32 here), evaluate included.
    assert study["precision_default"]["precision"] == "mixed_bfloat16"
    bf16_peak = study["matmul_probe"]["gflops_peak"]["bfloat16"]
    assert bf16_peak > 0 and study["peak_gflops"]["mixed_bfloat16"] == bf16_peak
    for name, row in study["stages"].items():
        assert row["precision"] == "mixed_bfloat16" and row["peak_gflops_used"] == bf16_peak, name
        assert row["flops"] > 0 and row["compute_bound_seconds"] == pytest.approx(row["flops"] / bf16_peak / 1e9, rel=2e-3, abs=0.06), name
        if name != "evaluate":  # evaluate's metrics hold scores, no timings
            # against the unrounded bound: compute_bound_seconds is rounded to 0.1 s, up to 3% of a 1.5 s bound
            exact_bound = row["flops"] / bf16_peak / 1e9
            assert row["wall_over_compute_bound"] == pytest.approx(row["wall_seconds"] / exact_bound, rel=0.02), name

    flops = study["flops_per_example"]
    blocks_1_4, block_5 = flops["extract_features"]["blocks_1_4"]["forward"], flops["extract_features"]["block_5"]["forward"]
    # The conv base forward at 150 px, per image: 13.23 GFLOPs (30.7 at 224 px, scaled by its layer shapes).
    assert blocks_1_4 + block_5 == pytest.approx(13.23e9, rel=0.001)
    features, bank = study["stages"]["extract_features"]["phases"]
    assert (features["phase"], features["seconds"]) == ("features", 400.0)
    assert (bank["phase"], bank["images"], bank["seconds"]) == ("bank", 4000, 300.0)
    assert bank["flops"] == pytest.approx(4000 * blocks_1_4, rel=1e-3)

    # K = 2 from dvc.lock (params.yaml now says 0): train_aug_frozen's block 5 once over
    # 2 x 2000 + 1000 activations, then the head.
    frozen, epochs = study["stages"]["train_aug_frozen"]["phases"]
    assert flops["train_aug_frozen"]["frozen"]["forward"] == block_5
    assert (frozen["phase"], frozen["images"], frozen["seconds"]) == ("frozen", 5000, 60.0)
    assert frozen["flops"] == pytest.approx(5000 * block_5, rel=1e-3)
    head = flops["train_aug_frozen"]["trained"]
    assert epochs["flops"] == pytest.approx(30 * (2000 * head["train_step"] + 1000 * head["forward"]), rel=1e-3)
    # finetune (block 5 unfrozen, as dvc.lock says): no frozen pass, block 5 + head trained.
    (finetune,) = study["stages"]["finetune"]["phases"]
    trained = flops["finetune"]["trained"]
    assert flops["finetune"]["frozen"] is None and trained["forward"] == block_5 + head["forward"]
    assert finetune["phase"] == "epochs" and finetune["seconds"] == 20 * 70.0
    assert finetune["flops"] == pytest.approx(20 * (2000 * trained["train_step"] + 1000 * trained["forward"]), rel=1e-3)
    assert "x bound" in done.stdout
