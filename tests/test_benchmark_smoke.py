"""Smoke test of tests/benchmark.py: it runs, writes the JSON it promises, with positive
numbers. Not a measurement (--quick: 16 images, one measured epoch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IMAGES = SHARED / "datasets" / "dogs-vs-cats" / "train"
SCRIPT = ROOT / "tests" / "benchmark.py"


def run_benchmark(*args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.skipif(not IMAGES.is_dir(), reason=f"real Kaggle images not found at {IMAGES} (they sit beside the project in CI)")
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


# ---------------------------------------------------------------- FLOP counter (tests/model_flops.py)

def test_conv2d_and_dense_flops_are_twice_their_multiply_adds():
    import keras

    from model_flops import layer_costs

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

    from model_flops import pass_flops

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

    from model_flops import pass_flops

    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(224, 224, 3))
    assert pass_flops(base)["forward"] == pytest.approx(30.7e9, rel=0.005)


def test_stage_phases_count_bank_and_epochs():
    """The bank: K copies of the training images plus the validation images once through the
    frozen prefix; the epochs: train steps of the suffix plus its validation forward."""
    from study_benchmark import stage_phases

    models = {"finetune": {"prefix": {"forward": 100}, "suffix": {"forward": 10, "train_step": 30},
                           "model": {"forward": 110, "train_step": 130}}}
    params = {"finetune": {"finetune": {"augment_bank": 4}}, "_current": {}}
    counts = {"train": 20, "validation": 6, "test": 5}
    metrics = {"epochs_run": 3, "seconds_per_epoch": 2.0, "bank_seconds": 7.0, "wall_seconds": 20.0}

    bank, epochs = stage_phases("finetune", metrics, models, params, counts)
    assert (bank["phase"], bank["flops"], bank["seconds"]) == ("bank", (4 * 20 + 6) * 100, 7.0)
    assert (epochs["phase"], epochs["flops"], epochs["seconds"]) == ("epochs", 3 * (20 * 30 + 6 * 10), 6.0)
    # Without a bank (augment_bank: 0 writes no bank_seconds) the whole model trains each epoch.
    (online,) = stage_phases("finetune", {k: v for k, v in metrics.items() if k != "bank_seconds"}, models, params, counts)
    assert online["flops"] == 3 * (20 * 130 + 6 * 110)


def test_study_benchmark_reads_the_committed_study(tmp_path):
    """tests/study_benchmark.py on this repository's metrics/ and dvc.lock, with a very short
    matmul probe: every timed stage gets FLOPs, a compute bound and wall / bound."""
    out = tmp_path / "study.json"
    script = ROOT / "tests" / "study_benchmark.py"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, str(script), "--precision", "float32", "--probe-seconds", "0.05",
                           "--probe-rounds", "1", "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())

    study = report["study"]
    assert study["precision"] == "float32" and study["image_size"] == 150
    assert study["matmul_probe"]["gflops_peak"]["float32"] > 0 and study["matmul_probe"]["gflops_peak"]["bfloat16"] > 0
    assert study["peak_gflops_used"] == study["matmul_probe"]["gflops_peak"]["float32"]
    assert set(study["stages"]) == {"extract_features", "train_custom", "train_custom_aug", "train_feature_clf",
                                    "train_aug_frozen", "finetune", "evaluate"}
    for name, row in study["stages"].items():
        assert row["flops"] > 0 and row["compute_bound_seconds"] > 0, name
        if name != "evaluate":  # evaluate's metrics hold scores, no timings
            assert row["wall_seconds"] > 0 and row["wall_over_compute_bound"] > 0, name
    assert [p["phase"] for p in study["stages"]["finetune"]["phases"]] == ["bank", "epochs"]
    # The conv base forward at 150 px, per image: 13.23 GFLOPs (30.7 at 224 px, scaled by its layer shapes).
    assert study["flops_per_example"]["extract_features"]["model"]["forward"] == pytest.approx(13.23e9, rel=0.001)
    assert "x bound" in done.stdout
