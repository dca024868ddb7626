"""`python -m stages.tools.readme_table` on a temporary README and a fake metrics file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT
from stages.lib.study import MODEL_NAMES as MODELS
from stages.tools import readme_table

README = """# Title

Intro.

## Results

<!-- results:start -->
| stale | table |
| --- | --- |
| old | row |
<!-- results:end -->

## After

Kept as is.

<!-- stages:start -->
<!-- stages:end -->
"""


def fake_metrics(path: Path, models=MODELS, extended: bool = True) -> dict:
    """metrics/runs/evaluate.json as `evaluate` writes it: per model, and under "extended" the
    extended test set's metrics per model (when there is one)."""
    results = {}
    for i, name in enumerate(models):
        acc = 0.70 + 0.05 * i
        results[name] = {"accuracy": acc, "accuracy_ci_low": acc - 0.03, "accuracy_ci_high": acc + 0.025,
                         "loss": 0.5, "roc_auc": 0.8, "n": 1000}
    if extended:
        results["extended"] = {name: {"accuracy": 0.71 + 0.05 * i, "accuracy_ci_low": 0.68 + 0.05 * i,
                                      "accuracy_ci_high": 0.74 + 0.05 * i, "roc_auc": 0.8, "n": 1000}
                               for i, name in enumerate(models)}
    path.write_text(json.dumps(results))
    return results


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "stages.tools.readme_table", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def table_rows(text: str) -> list[list[str]]:
    block = text.split(readme_table.START)[1].split(readme_table.END)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines() if line.startswith("| ")]


def test_fills_the_table_between_the_markers(tmp_path):
    (tmp_path / "README.md").write_text(README)
    (tmp_path / "README.md").chmod(0o644)
    (tmp_path / "metrics" / "runs").mkdir(parents=True)
    results = fake_metrics(tmp_path / "metrics" / "runs" / "evaluate.json")

    result = run(tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "README.md").read_text()
    assert "stale" not in text and "old | row" not in text
    before, between = README.split(readme_table.START)[0], README.split(readme_table.END)[1].split(readme_table.STAGES_START)[0]
    assert text.startswith(before + readme_table.START + "\n") and (readme_table.END + between + readme_table.STAGES_START + "\n") in text
    assert text.endswith(readme_table.STAGES_END + "\n")
    assert (tmp_path / "README.md").stat().st_mode & 0o777 == 0o644

    rows = table_rows(text)
    assert rows[0] == ["model", "stage", "test accuracy (95% CI)", "extended test (n)", "bar", "Chollet 1st ed.",
                       "Chollet 3rd ed.", "original notebook"]
    body = {row[1].strip("`"): row for row in rows[2:]}
    assert list(body) == list(MODELS), "the extended key is not a model"
    for name in MODELS:
        r, e = results[name], results["extended"][name]
        assert body[name][2] == f"{r['accuracy']:.3f} ({r['accuracy_ci_low']:.3f}-{r['accuracy_ci_high']:.3f})"
        assert body[name][3] == f"{e['accuracy']:.3f} (1000)"
    assert body["train_custom"][3:] == ["0.710 (1000)", ".72: short by .020", ".72 (val.)", ".786", ".77"]
    assert body["train_custom_aug"][4] == ".84: short by .090"
    assert body["train_custom_aug"][7] == "-", "the original notebook claimed nothing for it"
    assert body["train_aug_frozen"][5:] == [".95-.96 (val.)", ".984", ".94"]
    assert body["finetune"][3:] == ["0.910 (1000)", ".975: short by .075", ".968 (test)", ".986", ".97"]
    assert "n = 1000" in text and "`-`: no extended test set in these metrics" not in text

    # Idempotent, and --check agrees; a changed metric makes --check fail until refilled.
    assert run(tmp_path).returncode == 0 and (tmp_path / "README.md").read_text() == text
    assert run(tmp_path, "--check").returncode == 0
    results["finetune"]["accuracy"] = 0.5
    (tmp_path / "metrics" / "runs" / "evaluate.json").write_text(json.dumps(results))
    check = run(tmp_path, "--check")
    assert check.returncode == 1 and "out of date" in check.stderr
    assert (tmp_path / "README.md").read_text() == text
    assert run(tmp_path).returncode == 0
    assert "0.500 (" in (tmp_path / "README.md").read_text()
    # So does a change on the extended test set alone.
    results["extended"]["finetune"]["accuracy"] = 0.25
    (tmp_path / "metrics" / "runs" / "evaluate.json").write_text(json.dumps(results))
    assert run(tmp_path, "--check").returncode == 1
    assert run(tmp_path).returncode == 0 and run(tmp_path, "--check").returncode == 0
    assert "| 0.250 (1000) |" in (tmp_path / "README.md").read_text()


def test_no_extended_test_set_is_a_dash(tmp_path):
    """split.extended_per_class: 0 (or nothing left over): evaluate writes no "extended"."""
    (tmp_path / "README.md").write_text(README)
    fake_metrics(tmp_path / "evaluate.json", extended=False)
    assert readme_table.main(["--readme", str(tmp_path / "README.md"), "--metrics", str(tmp_path / "evaluate.json"),
                             "--root", str(tmp_path)]) == 0
    text = (tmp_path / "README.md").read_text()
    body = {row[1].strip("`"): row for row in table_rows(text)[2:]}
    assert list(body) == list(MODELS) and all(row[3] == "-" for row in body.values())
    assert "`-`: no extended test set in these metrics" in text


def test_missing_metrics_file_says_so(tmp_path):
    (tmp_path / "README.md").write_text(README)
    result = run(tmp_path)
    assert result.returncode != 0
    assert "metrics/runs/evaluate.json not found" in result.stderr
    assert (tmp_path / "README.md").read_text() == README


@pytest.mark.parametrize("readme", [
    README.replace(readme_table.START + "\n", ""),
    README.replace(readme_table.END + "\n", ""),
    README + readme_table.START + "\n" + readme_table.END + "\n",
    README.replace(readme_table.START, "XX").replace(readme_table.END, readme_table.START).replace("XX", readme_table.END),
])
def test_bad_markers_are_an_error(tmp_path, readme):
    (tmp_path / "README.md").write_text(readme)
    fake_metrics(tmp_path / "evaluate.json")
    assert readme_table.main(["--readme", str(tmp_path / "README.md"), "--metrics", str(tmp_path / "evaluate.json")]) == 1
    assert (tmp_path / "README.md").read_text() == readme


def test_a_model_absent_from_metrics_is_shown_as_such(tmp_path):
    (tmp_path / "README.md").write_text(README)
    fake_metrics(tmp_path / "evaluate.json", models=MODELS[:2])
    assert readme_table.main(["--readme", str(tmp_path / "README.md"), "--metrics", str(tmp_path / "evaluate.json"),
                             "--root", str(tmp_path)]) == 0
    body = {row[1].strip("`"): row for row in table_rows((tmp_path / "README.md").read_text())[2:]}
    assert body["train_custom"][2].startswith("0.700 (")
    assert body["finetune"][2].startswith("not in ")


def test_stage_table_from_the_stage_metrics(tmp_path):
    """The per-stage table: epochs, the epoch kept and its validation accuracy from
    metrics/<stage>.json; time and machine from each stage's run record."""
    from stages.lib.study import FEATURES_RECORD_FILE, history_file, metrics_file

    def write(path, values):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(json.dumps(values))

    machine = {"cpu": "Test CPU", "cpu_kind": "avx2", "gpus": 0, "precision": "float32"}
    write(FEATURES_RECORD_FILE, {"passes": [{"pass": "features", "images": 4000, "seconds": 57.1, "images_per_second": 70.0},
                                            {"pass": "bank", "images": 20000, "seconds": 248.4, "images_per_second": 80.5}],
                                 "wall_seconds": 300.0, **machine})
    for i, stage in enumerate(MODELS):
        kept = 21 if stage == "train_custom_aug" else 30 + i
        write(metrics_file(stage), {"epochs": 30 + i, "kept_epoch": kept, "val_accuracy": 0.8 if kept == 21 else 0.7})
        write(history_file(stage), {"history": [], "run": {"epochs_run": 30 + i, "wall_seconds": 60.0 * i,
                                                           "seconds_per_epoch": 2.5, "train_images_per_second": 800.0,
                                                           **machine}})
    block = readme_table.stage_table(tmp_path)
    rows = {r[0]: r for r in (line.strip("|").split("|") for line in block.splitlines() if line.startswith("| `"))}
    assert [c.strip() for c in rows[" `train_custom_aug` "][1:4]] == ["31 (21)", "0.800", "1.0 min"]
    assert [c.strip() for c in rows[" `train_custom` "][1:3]] == ["30 (30)", "0.700"]
    assert "features 4000 images at 70.0/s; bank 20000 images at 80.5/s" in rows[" `extract_features` "][1]
    assert "Test CPU (avx2)" in block and "float32" in block
    assert f"{(300 + 60 * sum(range(len(MODELS)))) / 60:.0f} min in all" in block
    (tmp_path / FEATURES_RECORD_FILE).unlink()  # a run that never reached extract_features
    assert "| `extract_features` | not in `plots/extract_features/record.json` |" in readme_table.stage_table(tmp_path)


@pytest.mark.parametrize("correct, cell", [(975, ".975: met"), (974, ".975: short by .001"), (1000, ".975: met"),
                                           (970, ".975: short by .005")])
def test_bar_cell_counts_exactly_at_the_bar(correct, cell):
    # accuracy as evaluate computes it, a count over 1000: 975/1000 meets .975 whatever its float
    assert readme_table.bar_cell("finetune", {"accuracy": correct / 1000}) == cell
    assert readme_table.bar_cell("train_custom", {"accuracy": 0.72}) == ".72: met"
    assert readme_table.bar_cell("not_a_model", {"accuracy": 0.5}) == "-"
    assert readme_table.bar_cell("finetune", {}) == ".975: -"
