"""The study report and the galleries of confident errors, on small fake inputs (fast; the
real stage is exercised end to end in test_pipeline.py)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from stages.figures import report
from stages.lib.diagnosis import diagnose, read_history
from stages.lib.metrics import binary_metrics, brier_score, expected_calibration_error


def test_confident_errors_order_and_limit():
    labels = np.array([0, 0, 1, 1, 0, 1])
    probs = np.array([0.9, 0.2, 0.05, 0.6, 0.55, 0.45])  # wrong: 0 (.4), 2 (.45), 4 (.05), 5 (.05)
    assert report.confident_errors(labels, probs, k=10).tolist() == [2, 0, 4, 5]
    assert report.confident_errors(labels, probs, k=2).tolist() == [2, 0]
    assert report.confident_errors(labels, labels * 1.0, k=5).tolist() == []
    assert report.confident_errors(labels, 1.0 - labels, k=3).tolist() == [0, 1, 2]


def test_gallery_matches_images_by_file(tmp_path):
    rng = np.random.default_rng(0)
    test = {"images": rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8),
            "files": np.array([f"f{i}.jpg" for i in range(6)]), "labels": np.array([0, 0, 0, 1, 1, 1])}
    order = np.array([5, 4, 3, 2, 1, 0])  # predictions in another order than the images
    probs = np.array([0.1, 0.2, 0.3, 0.99, 0.4, 0.4])  # wrong: f5 (.1), f4 (.2), f3 (.3), f2 (.99)
    shown = []
    real_grid = report.image_grid

    def spy(images, titles, path, title, columns=8):
        shown.append((images, titles))
        real_grid(images, titles, path, title, columns)

    report.image_grid = spy
    try:
        n = report.misclassified_gallery("m", test, test["files"][order], test["labels"][order], probs, tmp_path / "g.png")
    finally:
        report.image_grid = real_grid
    assert n == 4
    images, titles = shown[0]
    assert [t.split("\n")[0] for t in titles] == ["f2.jpg", "f5.jpg", "f4.jpg", "f3.jpg"]
    assert np.array_equal(images[0], test["images"][2]) and np.array_equal(images[1], test["images"][5])
    assert titles[0] == "f2.jpg\ncat called dog, P(dog) 0.990"
    assert titles[1] == "f5.jpg\ndog called cat, P(dog) 0.100"
    assert (tmp_path / "g.png").stat().st_size > 1000

    none = report.misclassified_gallery("m", test, test["files"], test["labels"], test["labels"] * 1.0, tmp_path / "n.png")
    assert none == 0 and (tmp_path / "n.png").stat().st_size > 500


def write_tsvs(stage_dir: Path, val_loss, loss) -> None:
    folder = stage_dir / "plots" / "metrics"
    folder.mkdir(parents=True)
    n = len(val_loss)
    columns = {"loss": loss, "val_loss": val_loss, "accuracy": np.linspace(0.6, 0.9, n),
               "val_accuracy": np.linspace(0.6, 0.8, n)}
    for key, values in columns.items():
        lines = ["step\t" + key] + [f"{i + 1}\t{v}" for i, v in enumerate(values)]
        (folder / f"{key}.tsv").write_text("\n".join(lines) + "\n")


def test_study_report(tmp_path):
    plots = tmp_path / "plots"
    curves = {
        "a": (np.r_[np.linspace(0.7, 0.5, 4), np.linspace(0.6, 0.9, 8)], np.geomspace(0.7, 0.05, 12)),
        "b": (np.geomspace(0.7, 0.3, 12), np.geomspace(0.7, 0.2, 12)),
    }
    for stage, (val, loss) in curves.items():
        write_tsvs(plots / stage, val, loss)
    (plots / "data").mkdir()
    (plots / "data" / "class_counts.png").write_bytes(b"png")
    (plots / "evaluate").mkdir()
    for f in ("accuracy.png", "roc.png", "confusion.png", "reliability.png",
              *(f"{kind}_{name}.png" for name in curves for kind in ("misclassified", "gradcam"))):
        (plots / "evaluate" / f).write_bytes(b"png")
    report.stage_curves(list(curves), plots, plots / "evaluate")
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 20)
    results = {}
    for s in curves:
        probs = np.clip(labels * 0.6 + rng.uniform(0, 0.4, 40), 0, 1)
        results[s] = {**binary_metrics(labels, probs), "ece": expected_calibration_error(labels, probs),
                      "brier": brier_score(labels, probs)}
    extended = {"a": {"accuracy": 0.9, "accuracy_ci_low": 0.88, "accuracy_ci_high": 0.92, "roc_auc": 0.95, "n": 1000},
                "b": {"accuracy": 0.8, "accuracy_ci_low": 0.77, "accuracy_ci_high": 0.83, "roc_auc": None, "n": 1000}}

    text = report.study_report(results, {"a": "model A", "b": "model B"}, plots, plots / "report.md", extended,
                               kept={"b": 11})
    assert (plots / "report.md").read_text() == text
    assert "## Extended test set (1000 images)" in text
    assert "| model A | `a` | 0.900 (0.880-0.920) | 0.950 | 1000 |" in text.splitlines()
    assert "| model B | `b` | 0.800 (0.770-0.830) | - | 1000 |" in text.splitlines()  # AUC of one class: none
    assert "15 equal-width bins" in text
    without = report.study_report(results, {}, plots, plots / "report.md")
    assert "Extended test set" not in without

    for stage in curves:
        r = results[stage]
        row = next(line for line in text.splitlines() if line.startswith(f"| model {stage.upper()} | `{stage}` |"))
        assert f"{r['accuracy']:.3f} ({r['accuracy_ci_low']:.3f}-{r['accuracy_ci_high']:.3f})" in row
        assert f"| {r['roc_auc']:.3f} |" in row
        assert row.endswith(f"| {r['ece']:.3f} | {r['brier']:.3f} | {r['n']} |")
        d = diagnose(read_history(plots / stage), {"b": 11}.get(stage))
        assert f"- `{stage}`: {d.line}" in text.splitlines()
        row = next(line for line in text.splitlines() if line.startswith(f"| `{stage}` | 12 |"))
        assert row.startswith(f"| `{stage}` | 12 | {d.best_val_loss:.4f} ({d.best_epoch}) | {d.kept_epoch or 12} | {d.onset} |")
    assert "- `a`: overfitting from epoch" in text
    assert "- `b`: still improving: " in text and "the weights kept are epoch 11's (restore_best)" in text

    links = re.findall(r"\]\(([^)]+)\)", text)
    assert "evaluate/misclassified_a.png" in links and "evaluate/curves/a.png" in links and "data/class_counts.png" in links
    assert "evaluate/gradcam_b.png" in links and "evaluate/reliability.png" in links
    for target in links:
        assert (plots / target).is_file(), f"broken link {target}"


def test_study_report_names_a_missing_history(tmp_path):
    from stages.lib.params import UserError

    results = {"a": binary_metrics(np.array([0, 1]), np.array([0.2, 0.7]))}
    with pytest.raises(UserError, match="loss.tsv not found"):
        report.study_report(results, {}, tmp_path, tmp_path / "report.md")


def test_gradcam_choice_errors_then_the_most_confident_right_cats_and_dogs():
    from stages.evaluate import gradcam_choice

    labels = np.array([0, 0, 0, 1, 1, 1, 0])
    probs = np.array([0.1, 0.02, 0.8, 0.9, 0.3, 0.99, 0.4])  # wrong: 2 (.3), 4 (.2); right cats 1, 0, 6
    errors, cats, dogs = gradcam_choice(labels, probs, k=2)
    assert errors.tolist() == [2, 4] and cats.tolist() == [1, 0] and dogs.tolist() == [5, 3]
    errors, cats, dogs = gradcam_choice(labels, labels * 1.0, k=8)
    assert errors.tolist() == [] and cats.tolist() == [0, 1, 2, 6] and dogs.tolist() == [3, 4, 5]
