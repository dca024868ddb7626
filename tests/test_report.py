"""The study report and the galleries of confident errors, on small fake inputs (fast; the
real stage is exercised end to end in test_pipeline.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import ROOT
from stages.figures import report
from stages.lib.diagnosis import diagnose
from stages.lib.study import history_rows, read_history
from stages.lib.metrics import binary_metrics, brier_score, expected_calibration_error, mcnemar_p
from stages.lib.study import DESCRIPTIONS, MODEL_NAMES


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
        n = report.misclassified_gallery("m", test, test["files"][order], test["labels"][order], probs, tmp_path / "g.png",
                                         ("cat", "dog"))
    finally:
        report.image_grid = real_grid
    assert n == 4
    images, titles = shown[0]
    assert [t.split("\n")[0] for t in titles] == ["f2.jpg", "f5.jpg", "f4.jpg", "f3.jpg"]
    assert np.array_equal(images[0], test["images"][2]) and np.array_equal(images[1], test["images"][5])
    assert titles[0] == "f2.jpg\ncat called dog, P(dog) 0.990"
    assert titles[1] == "f5.jpg\ndog called cat, P(dog) 0.100"
    assert (tmp_path / "g.png").stat().st_size > 1000

    none = report.misclassified_gallery("m", test, test["files"], test["labels"], test["labels"] * 1.0, tmp_path / "n.png",
                                       ("cat", "dog"))
    assert none == 0 and (tmp_path / "n.png").stat().st_size > 500


def write_history(stage_dir: Path, val_loss, loss, accuracy=None, val_accuracy=None) -> None:
    """A training stage's history file, as training.fit writes it (no run record)."""
    stage_dir.mkdir(parents=True)
    n = len(val_loss)
    columns = {"loss": loss, "val_loss": val_loss,
               "accuracy": np.linspace(0.6, 0.9, n) if accuracy is None else accuracy,
               "val_accuracy": np.linspace(0.6, 0.8, n) if val_accuracy is None else val_accuracy}
    rows = [{"epoch": i + 1, **{k: float(v[i]) for k, v in columns.items()}} for i in range(n)]
    (stage_dir / "history.json").write_text(json.dumps({"history": history_rows(rows)}))


def fake_plots(tmp_path: Path, curves: dict) -> Path:
    """plots/ with each stage's history file (curves: stage -> write_history arguments), the
    figures the report links and the learning curves drawn from the histories."""
    plots = tmp_path / "plots"
    for stage, columns in curves.items():
        write_history(plots / stage, *columns)
    (plots / "data").mkdir()
    (plots / "data" / "class_counts.png").write_bytes(b"png")
    (plots / "evaluate").mkdir()
    for f in ("accuracy.png", "roc.png", "confusion.png", "reliability.png",
              *(f"{kind}_{name}.png" for name in curves for kind in ("misclassified", "gradcam"))):
        (plots / "evaluate" / f).write_bytes(b"png")
    report.stage_curves(list(curves), plots, plots / "evaluate")
    return plots


def prediction_frame(labels, probs, prefix: str = "img") -> pd.DataFrame:
    """What evaluate writes to plots/evaluate/predictions/<model>.csv, for images named
    <prefix><i>.jpg (evaluate's own function)."""
    from stages.evaluate import prediction_frame as evaluate_frame

    split = {"files": np.array([f"{prefix}{i}.jpg" for i in range(len(labels))]), "labels": np.asarray(labels)}
    return evaluate_frame(split, np.asarray(probs, dtype=np.float64), ("cat", "dog"))


def scored(labels, probs) -> dict:
    return {**binary_metrics(labels, probs), "ece": expected_calibration_error(labels, probs),
            "brier": brier_score(labels, probs)}


def test_study_report(tmp_path):
    curves = {
        "a": (np.r_[np.linspace(0.7, 0.5, 4), np.linspace(0.6, 0.9, 8)], np.geomspace(0.7, 0.05, 12)),
        "b": (np.geomspace(0.7, 0.3, 12), np.geomspace(0.7, 0.2, 12)),
    }
    plots = fake_plots(tmp_path, curves)
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 20)
    probs = {s: np.clip(labels * 0.6 + rng.uniform(0, 0.4, 40), 0, 1) for s in curves}
    results = {s: scored(labels, probs[s]) for s in curves}
    predictions = {s: prediction_frame(labels, probs[s]) for s in curves}
    extended_labels = np.repeat([0, 1], 30)
    extended_predictions = {s: prediction_frame(extended_labels, np.clip(extended_labels * 0.5 + rng.uniform(0, 0.5, 60),
                                                                         0, 1), "x") for s in curves}
    extended = {"a": {"accuracy": 0.9, "accuracy_ci_low": 0.88, "accuracy_ci_high": 0.92, "roc_auc": 0.95, "n": 1000},
                "b": {"accuracy": 0.8, "accuracy_ci_low": 0.77, "accuracy_ci_high": 0.83, "roc_auc": None, "n": 1000}}

    text = report.study_report(results, {"a": "model A", "b": "model B"}, plots, plots / "report.md", ("cat", "dog"), extended,
                               predictions, extended_predictions, kept={"b": 11})
    assert (plots / "report.md").read_text() == text
    assert "## Extended test set (1000 images)" in text
    assert "| model A | `a` | 0.900 (0.880-0.920) | 0.950 | 1000 |" in text.splitlines()
    assert "| model B | `b` | 0.800 (0.770-0.830) | - | 1000 |" in text.splitlines()  # AUC of one class: none
    assert "15 equal-width bins" in text
    assert "## What the study shows" not in text  # a and b belong to no phase of the study
    without = report.study_report(results, {}, plots, plots / "report.md", ("cat", "dog"))
    assert "Extended test set" not in without and "McNemar" not in without

    for stage in curves:
        r = results[stage]
        row = next(line for line in text.splitlines() if line.startswith(f"| model {stage.upper()} | `{stage}` |"))
        assert f"{r['accuracy']:.3f} ({r['accuracy_ci_low']:.3f}-{r['accuracy_ci_high']:.3f})" in row
        assert f"| {r['roc_auc']:.3f} |" in row
        assert row.endswith(f"| {r['ece']:.3f} | {r['brier']:.3f} | {r['n']} |")
        d = diagnose(read_history(plots / stage / "history.json"), {"b": 11}.get(stage))
        assert f"- `{stage}`: {d.line}" in text.splitlines()
        row = next(line for line in text.splitlines() if line.startswith(f"| `{stage}` | 12 |"))
        assert row.startswith(f"| `{stage}` | 12 | {d.best_val_loss:.4f} ({d.best_epoch}) | {d.kept_epoch or 12} | {d.onset} |")
    assert "- `a`: overfitting from epoch" in text
    assert "- `b`: still improving: " in text and "the weights kept are epoch 11's (restore_best)" in text

    # McNemar, counted here from the predictions: a row per image set, one sentence per pair.
    said = []
    for where, frames in (("test split", predictions), ("extended test set", extended_predictions)):
        right = {s: (f["actual"] == f["predicted"]).to_numpy() for s, f in frames.items()}
        only_a, only_b = int((right["a"] & ~right["b"]).sum()), int((~right["a"] & right["b"]).sum())
        p = mcnemar_p(only_a, only_b)
        assert (f"| `a` | `b` | {where} | {right['a'].mean():.3f} | {right['b'].mean():.3f} | {only_a} | {only_b} | "
                f"{report.p_text(p)} | {'real' if p < 0.05 else 'within noise'} |") in text.splitlines()
        said.append(f"on the {where} {right['a'].mean():.3f} against {right['b'].mean():.3f} is "
                    f"{'a real difference at the 5% level' if p < 0.05 else 'within noise'}: "
                    f"{only_a} vs {only_b} discordant images, {report.p_text(p, named=True)}")
    assert f"- `a` against `b`: {'; '.join(said)}." in text.splitlines()

    links = re.findall(r"\]\(([^)]+)\)", text)
    assert "evaluate/misclassified_a.png" in links and "evaluate/curves/a.png" in links and "data/class_counts.png" in links
    assert "evaluate/gradcam_b.png" in links and "evaluate/reliability.png" in links
    for target in links:
        assert (plots / target).is_file(), f"broken link {target}"


# Which of 400 test images each model gets wrong: the two phase-1 models and the step to
# VGG16 differ clearly, the later VGG16 steps only by a few images.
WRONG = {
    "train_custom": range(0, 100),  # 300 right
    "train_custom_aug": [*range(50, 110)],  # vs train_custom: only it right 0-49 (50), only train_custom 100-109 (10)
    "train_feature_clf": [*range(90, 100), *range(110, 120)],  # vs aug: 50 against 10
    "train_aug_frozen": [*range(90, 100), *range(120, 127)],  # vs feature_clf: 10 against 7
    "finetune": [*range(92, 100), *range(127, 133)],  # vs frozen: 9 (90, 91, 120-126) against 6 (127-132)
}


def test_study_report_says_what_each_phase_shows(tmp_path):
    """The five models of the study on fake curves and predictions: a paragraph per phase,
    right after the test results, every number in it from the inputs."""
    n = 20
    # val_loss falling 10% an epoch (more than TOLERANCE) to `level` at epoch `first`, then flat
    flat = lambda first, level, length=n: np.r_[level * 1.1 ** np.arange(first - 1, 0, -1),  # noqa: E731
                                                [level] * (length - first + 1)]
    falling = np.geomspace(0.7, 0.05, n)
    curves = {
        # stalls at 8 of 20, training loss falling, accuracies parting: overfitting, gap +0.25
        "train_custom": (flat(8, 0.5), falling, np.linspace(0.6, 0.99, n), np.linspace(0.6, 0.74, n)),
        # stalls at 30 of 40, gap +0.05 .. +0.06: later and less
        "train_custom_aug": (flat(30, 0.35, 40), np.geomspace(0.7, 0.2, 40), np.linspace(0.6, 0.9, 40),
                             np.linspace(0.6, 0.845, 40)),
        "train_feature_clf": (flat(10, 0.22), falling, np.linspace(0.9, 0.99, n), np.linspace(0.9, 0.97, n)),
        "train_aug_frozen": (np.geomspace(0.9, 0.18, n), np.geomspace(4.5, 0.3, n)),  # still improving
        "finetune": (flat(5, 0.15), falling, np.linspace(0.95, 0.985, n), np.linspace(0.95, 0.978, n)),
    }
    plots = fake_plots(tmp_path, curves)
    labels = np.repeat([0, 1], 200)
    results, predictions = {}, {}
    for name, wrong in WRONG.items():
        predicted = labels.copy()
        predicted[list(wrong)] = 1 - labels[list(wrong)]
        probs = np.where(predicted == 1, 0.9, 0.1)
        results[name], predictions[name] = scored(labels, probs), prediction_frame(labels, probs)
    text = report.study_report(results, DESCRIPTIONS, plots, plots / "report.md", ("cat", "dog"), None, predictions,
                               kept={"train_custom_aug": 28})
    lines = text.splitlines()
    assert lines.index("## Test split (400 images)") < lines.index("## What the study shows") \
        < lines.index("### Phase 1: a small convnet from scratch") \
        < lines.index("### Phase 2: VGG16 pre-trained on ImageNet") < lines.index("## Paired comparisons (McNemar)")
    phase1 = lines[lines.index("### Phase 1: a small convnet from scratch") + 2]
    phase2 = lines[lines.index("### Phase 2: VGG16 pre-trained on ImageNet") + 2]

    plain, regularised = (diagnose(read_history(plots / s / "history.json"), k) for s, k in (("train_custom", None),
                                                                           ("train_custom_aug", 28)))
    assert plain.label == regularised.label == "overfitting" and (plain.onset, regularised.onset) == (8, 30)
    assert f"`train_custom` (small convnet) reaches 0.750 on the test split; {plain.summary}." in phase1
    assert plain.summary.startswith("overfitting from epoch 8 of 20: validation loss stopped improving there")
    assert (f"`train_custom_aug` (+ dropout and augmentation): it overfits later (from epoch 30 of 40, against 8 of "
            f"20) and less (train - validation accuracy gap at the end {regularised.final_gap:+.3f} against "
            f"{plain.final_gap:+.3f}); the weights kept are epoch 28's (restore_best), 2 epochs before the onset.") \
        in phase1
    assert ("Its test accuracy against `train_custom`: +0.100 (on the test split 0.750 against 0.850 is a real "
            "difference at the 5% level: 10 vs 50 discordant images, p < 0.001).") in phase1
    assert phase1.endswith("In short, on the test split, `train_custom_aug` is really better than `train_custom`.")

    # Transfer learning: against the best model of phase 1.
    assert ("`train_feature_clf` (VGG16 features + dense) reaches 0.950 on the test split, +0.100 over "
            "`train_custom_aug`, the best model before it (on the test split 0.850 against 0.950 is a real "
            "difference at the 5% level: 10 vs 50 discordant images, p < 0.001)") in phase2
    # train_feature_clf overfits mildly, so its successor is measured against it ...
    assert "`train_aug_frozen` (frozen VGG16 + augmentation): it does not overfit within its 20 epochs; still " \
           "improving: validation loss reached its best level" in phase2
    # ... and fine-tuning's gain over the frozen model is within noise (6 vs 9: p = 0.61).
    assert f"{mcnemar_p(6, 9):.2f}" == "0.61"
    assert ("Its test accuracy against `train_aug_frozen`: +0.007 (on the test split 0.958 against 0.965 is within "
            "noise: 6 vs 9 discordant images, p = 0.61).") in phase2
    assert phase2.endswith("In short, on the test split, `train_feature_clf` is really better than `train_custom_aug`; "
                           "`train_aug_frozen` against `train_feature_clf` and `finetune` against `train_aug_frozen` "
                           "are within noise.")
    # The comparisons: consecutive models, then each against the best (finetune), none twice.
    compared = [tuple(re.findall(r"`(\w+)`", line)[:2]) for line in lines if line.startswith("- `") and " against `" in line]
    assert compared == [("train_custom", "train_custom_aug"), ("train_custom_aug", "train_feature_clf"),
                        ("train_feature_clf", "train_aug_frozen"), ("train_aug_frozen", "finetune"),
                        ("train_custom", "finetune"), ("train_custom_aug", "finetune"), ("train_feature_clf", "finetune")]


def test_comparison_pairs_and_phase_references():
    names = ["p", "q", "r", "s", "t"]
    accuracy = {"p": 0.7, "q": 0.9, "r": 0.8, "s": 0.9, "t": 0.85}  # best: q (first of the ties)
    assert report.comparison_pairs(names, accuracy) == [("p", "q"), ("q", "r"), ("r", "s"), ("s", "t"), ("q", "s"),
                                                        ("q", "t")]
    phases = {"p": 1, "q": 1, "r": 2, "s": 2, "t": 3}
    references = report.phase_references(names, accuracy, phases)
    assert references == {"q": "p", "r": "q", "s": "r", "t": "q"}  # t: the best of phases 1 and 2 is q
    extra = [(b, a) for a, b in references.items()]
    assert report.comparison_pairs(names, accuracy, extra) == report.comparison_pairs(names, accuracy)
    assert report.phase_references(["x", "p"], accuracy, phases) == {}  # x is in no phase, p alone in its own


def test_in_short_once_for_both_test_sets_when_they_agree():
    real, noise = {"only_a": 1, "only_b": 20, "p": mcnemar_p(1, 20)}, {"only_a": 6, "only_b": 5, "p": 1.0}
    worse = {"only_a": 20, "only_b": 1, "p": mcnemar_p(20, 1)}
    steps = [("a", "b"), ("b", "c")]
    agree = {"test split": {("a", "b"): real, ("b", "c"): noise}, "extended test set": {("a", "b"): real, ("b", "c"): noise}}
    assert report.in_short(steps, agree) == [
        "In short, on the test split and the extended test set, `b` is really better than `a`; `c` against `b` is "
        "within noise."]
    differ = {"test split": {("a", "b"): real, ("b", "c"): noise}, "extended test set": {("a", "b"): real, ("b", "c"): worse}}
    assert report.in_short(steps, differ) == [
        "In short, on the test split, `b` is really better than `a`; `c` against `b` is within noise.",
        "On the extended test set, `b` is really better than `a`; `c` is really worse than `b`."]
    assert report.in_short([], agree) == []


def test_p_values_and_verdicts_in_words():
    assert [report.p_text(p) for p in (0.0004, 0.0499, 0.071, 0.36, 1.0)] == ["< 0.001", "0.050", "0.071", "0.36",
                                                                              "1.00"]
    assert report.p_text(0.0004, named=True) == "p < 0.001" and report.p_text(0.36, named=True) == "p = 0.36"
    within = {"accuracy_a": 0.968, "accuracy_b": 0.974, "only_a": 12, "only_b": 18, "p": mcnemar_p(12, 18)}
    assert report.verdict(within) == "0.968 against 0.974 is within noise: 12 vs 18 discordant images, p = 0.36"
    real = {**within, "only_a": 4, "only_b": 18, "p": mcnemar_p(4, 18)}
    assert report.verdict(real).startswith("0.968 against 0.974 is a real difference at the 5% level: 4 vs 18")


def test_report_on_the_committed_run(tmp_path):
    """The report's words on the committed histories and test predictions: the small
    convnet overfits from about epoch 12, and the paired comparisons count the images."""
    metrics = json.loads((ROOT / "metrics/runs/evaluate.json").read_text())
    results = {m: metrics[m] for m in MODEL_NAMES}
    predictions = {m: pd.read_csv(ROOT / f"plots/evaluate/predictions/{m}.csv") for m in MODEL_NAMES}
    folder = ROOT / "plots/evaluate/predictions_extended"  # written by evaluate since the paired comparisons
    extended_predictions = ({m: pd.read_csv(folder / f"{m}.csv") for m in MODEL_NAMES} if folder.is_dir() else None)
    text = report.study_report(results, DESCRIPTIONS, ROOT / "plots", tmp_path / "report.md", ("cat", "dog"),
                               metrics.get("extended"),
                               predictions, extended_predictions, report.kept_epochs(list(MODEL_NAMES), ROOT / "plots"))
    lines = text.splitlines()

    line = next(line for line in lines if line.startswith("- `train_custom`: "))
    onset = int(re.match(r"- `train_custom`: overfitting from epoch (\d+) of 30: validation loss stopped improving", line)[1])
    assert abs(onset - 12) <= 3, line
    phase1 = lines[lines.index("### Phase 1: a small convnet from scratch") + 2]
    assert f"`train_custom` (small convnet) reaches 0.746 on the test split; overfitting from epoch {onset} of 30" \
        in phase1
    assert "`train_custom_aug` (+ dropout and augmentation): it overfits later" in phase1 \
        or "`train_custom_aug` (+ dropout and augmentation): it does not overfit" in phase1

    right = {m: (f["actual"] == f["predicted"]).to_numpy() for m, f in predictions.items()}
    for a, b in (("train_custom", "train_custom_aug"), ("train_aug_frozen", "finetune")):
        only_a, only_b = int((right[a] & ~right[b]).sum()), int((~right[a] & right[b]).sum())
        line = next(line for line in lines if line.startswith(f"- `{a}` against `{b}`: on the test split "))
        assert (f"{right[a].mean():.3f} against {right[b].mean():.3f} is " in line
                and f": {only_a} vs {only_b} discordant images, " in line), line
    assert ("- `train_custom` against `train_custom_aug`: on the test split 0.746 against 0.859 is a real difference "
            "at the 5% level: ") in text
    links = re.findall(r"\]\(([^)]+)\)", text)
    for target in links:
        assert (tmp_path / target).resolve().is_file(), f"broken link {target}"


def test_study_report_names_a_missing_history(tmp_path):
    from stages.lib.params import UserError

    results = {"a": binary_metrics(np.array([0, 1]), np.array([0.2, 0.7]))}
    with pytest.raises(UserError, match="history.json not found"):
        report.study_report(results, {}, tmp_path, tmp_path / "report.md", ("cat", "dog"))


def test_gradcam_choice_errors_then_the_most_confident_right_cats_and_dogs():
    from stages.evaluate import gradcam_choice

    labels = np.array([0, 0, 0, 1, 1, 1, 0])
    probs = np.array([0.1, 0.02, 0.8, 0.9, 0.3, 0.99, 0.4])  # wrong: 2 (.3), 4 (.2); right cats 1, 0, 6
    errors, cats, dogs = gradcam_choice(labels, probs, k=2)
    assert errors.tolist() == [2, 4] and cats.tolist() == [1, 0] and dogs.tolist() == [5, 3]
    errors, cats, dogs = gradcam_choice(labels, labels * 1.0, k=8)
    assert errors.tolist() == [] and cats.tolist() == [0, 1, 2, 6] and dogs.tolist() == [3, 4, 5]


def test_the_accuracy_figure_takes_a_perfect_and_a_null_score(tmp_path):
    """4 of 4 right: the Wilson upper bound is 0.9999999999999999, below the accuracy by
    round-off; the error bar is clipped at 0 instead of stopping `evaluate`."""
    labels = np.array([0, 0, 1, 1])
    results = {"right": scored(labels, np.array([0.1, 0.2, 0.8, 0.9])),
               "wrong": scored(labels, np.array([0.9, 0.8, 0.2, 0.1]))}
    assert results["right"]["accuracy"] == 1.0 and results["right"]["accuracy_ci_high"] < 1.0
    predictions = {m: prediction_frame(labels, [0.1, 0.2, 0.8, 0.9] if m == "right" else [0.9, 0.8, 0.2, 0.1])
                   for m in results}
    report.evaluation_figures(results, predictions, tmp_path, ("cat", "dog"))
    assert (tmp_path / "accuracy.png").is_file()
