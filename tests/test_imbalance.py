"""When one class outnumbers the other: the metrics that stay honest, the balanced class
weights of `train.class_weight: balanced`, and what the report says about it."""

from __future__ import annotations

import numpy as np
import pytest

from stages.lib.metrics import average_precision, binary_metrics


def test_average_precision_by_hand():
    # Ranked by probability: 1 0 1 1 0. Recall steps of 1/3 at the three positives, where
    # precision is 1/1, 2/3 and 3/4: AP = (1 + 2/3 + 3/4) / 3 = 0.80556 (scikit-learn's
    # average_precision_score gives the same on these numbers).
    labels, probs = np.array([1, 0, 1, 1, 0]), np.array([0.9, 0.8, 0.7, 0.3, 0.2])
    assert average_precision(labels, probs) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert average_precision(labels, np.array([0.9, 0.1, 0.8, 0.7, 0.2])) == pytest.approx(1.0)
    # Ties share a threshold: all five at 0.5 give one step, at precision 3/5.
    assert average_precision(labels, np.full(5, 0.5)) == pytest.approx(0.6)
    assert np.isnan(average_precision(np.zeros(3), np.array([0.1, 0.5, 0.9])))


def test_a_constant_answer_scores_the_base_rate_in_accuracy_and_one_half_balanced():
    labels = np.r_[np.zeros(80), np.ones(20)].astype(int)  # 1:4, positive class rare
    always_negative = binary_metrics(labels, np.full(100, 0.1))
    assert always_negative["accuracy"] == pytest.approx(0.8)
    assert always_negative["balanced_accuracy"] == pytest.approx(0.5)
    assert always_negative["recall"] == 0.0 and always_negative["specificity"] == 1.0
    # Finding half the positives and all negatives: recalls 0.5 and 1, balanced 0.75.
    probs = np.r_[np.full(80, 0.1), np.full(10, 0.9), np.full(10, 0.2)]
    half = binary_metrics(labels, probs)
    assert half["accuracy"] == pytest.approx(0.9)
    assert half["balanced_accuracy"] == pytest.approx(0.75)
    # The ranking is perfect (every bee above every ant) though 0.5 misses half of them:
    # PR AUC reads the ranking, balanced accuracy the decisions.
    assert half["pr_auc"] == pytest.approx(1.0) and half["roc_auc"] == pytest.approx(1.0)


def test_balanced_class_weights():
    from stages.lib.datasets import class_weight_balanced

    labels = np.r_[np.zeros(40), np.ones(10)].astype(np.uint8)
    weights = class_weight_balanced(labels)
    assert weights[labels == 0] == pytest.approx(50 / 80) and weights[labels == 1] == pytest.approx(50 / 20)
    assert weights[labels == 0].sum() == pytest.approx(weights[labels == 1].sum())  # each class weighs the same
    assert weights.sum() == pytest.approx(len(labels))  # the mean weight stays 1: the learning rate means the same
    np.testing.assert_array_equal(class_weight_balanced(np.array([0, 1, 1, 0])), np.ones(4))
    with pytest.raises(ValueError, match="both classes"):
        class_weight_balanced(np.zeros(5))


def test_training_batches_carry_the_weights():
    from stages.lib import datasets

    labels = np.array([0, 0, 0, 1], np.uint8)
    weights = datasets.class_weight_balanced(labels)
    ds, steps = datasets.training_batches(4, labels, 2, seed=1, epochs=1,
                                          make_batch=datasets.plain_inputs(np.arange(4, dtype=np.float32)[:, None]),
                                          sample_weights=weights)
    seen = {}
    for x, y, w in ds:
        for xi, yi, wi in zip(x.numpy()[:, 0], y.numpy(), w.numpy()):
            seen[int(xi)] = (int(yi), float(wi))
    assert steps == 2 and seen == {0: (0, pytest.approx(2 / 3)), 1: (0, pytest.approx(2 / 3)),
                                   2: (0, pytest.approx(2 / 3)), 3: (1, pytest.approx(2.0))}
    unweighted, _ = datasets.training_batches(4, labels, 2, 1, 1, datasets.plain_inputs(np.zeros((4, 1), np.float32)))
    assert len(next(iter(unweighted))) == 2  # class_weight none: (inputs, labels) as before


def test_the_report_says_when_the_classes_are_imbalanced():
    from stages.figures.report import class_balance

    labels = np.r_[np.zeros(80), np.ones(20)].astype(int)
    results = {"constant": binary_metrics(labels, np.full(100, 0.1)),
               "model": binary_metrics(labels, np.r_[np.full(80, 0.1), np.full(10, 0.9), np.full(10, 0.2)])}
    text = "\n".join(class_balance(results, ("ant", "bee")))
    assert "The test split holds 80 ant and 20 bee images: imbalanced, 80% ant." in text
    assert "A model that always answers ant scores 0.800 accuracy" in text
    assert "- `constant`: accuracy 0.800, balanced accuracy 0.500; it finds 0.0% of the bee images." in text
    assert "- `model`: accuracy 0.900, balanced accuracy 0.750; it finds 50.0% of the bee images." in text

    balanced = np.repeat([0, 1], 50)
    said = class_balance({"m": binary_metrics(balanced, np.where(balanced == 1, 0.8, 0.3))}, ("cat", "dog"))
    assert said[0] == ("The test split holds 50 cat and 50 dog images: balanced enough (50% cat) for accuracy "
                       "to mean what it says.")


@pytest.mark.slow
def test_an_imbalanced_study_end_to_end(tmp_path, random_vgg16_weights):
    """A 1:4 set with `train.class_weight: balanced`: the whole study runs (`dvc repro`), the
    training batches carry the weights, evaluate records balanced accuracy and each class's
    recall, and the report says the test split is imbalanced and what accuracy hides."""
    import json

    from helpers import dvc, make_project, synthetic_image, tiny_params

    for label, pattern, n in (("rare", "cat", 20), ("common", "dog", 80)):
        folder = tmp_path / "src" / label
        folder.mkdir(parents=True)
        for i in range(n):
            synthetic_image(pattern, i).save(folder / f"{i}.jpg", format="JPEG", quality=90)
    params = tiny_params(tmp_path / "src", random_vgg16_weights)
    params["split"].update(train_per_class=0.6, val_per_class=0.2, test_per_class=0.2, order="shuffle",
                           classes=["common", "rare"])  # the rare class is the positive one, as in screening
    params["train"]["class_weight"] = "balanced"
    project = make_project(tmp_path / "project", params)
    dvc(project, "repro")
    record = json.loads((project / "metrics/runs/evaluate.json").read_text())
    for name in ("train_custom", "finetune"):
        r = record[name]
        assert r["n"] == 20 and r["tp"] + r["fn"] == 4  # 16 common, 4 rare in the test split
        assert r["balanced_accuracy"] == pytest.approx((r["recall"] + r["specificity"]) / 2, abs=1e-5)
        assert 0 <= r["pr_auc"] <= 1
    report = (project / "plots/report.md").read_text()
    assert "# common vs. rare: results" in report
    assert "The test split holds 16 common and 4 rare images: imbalanced, 80% common." in report
    assert "A model that always answers common scores 0.800 accuracy" in report
    assert "| recall common | recall rare |" in report
