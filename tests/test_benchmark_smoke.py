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
