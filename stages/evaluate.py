"""Stage `evaluate`: every model on the same 1000 test images, and the study's report.

metrics/test/<model>.json (DVC metrics, one row per model in `dvc metrics show`: test
accuracy with its 95% interval, ROC AUC, log loss, ECE and the extended-test accuracy, to 3
decimals); metrics/runs/evaluate.json (the full record, per model: accuracy with 95%
interval, loss, ROC AUC, precision, recall, F1, confusion counts, n, and the calibration of
P(positive class): ECE over 15 equal-width bins and the Brier score; under "extended", each model on
the extended test set, when `split` wrote one); under plots/evaluate/ per model its predictions (and on the extended
test set, under predictions_extended/), ROC curve, reliability curve, most confidently
misclassified images, Grad-CAM heatmaps and learning curves (drawn here from each training
stage's history file, so a change to a figure reruns this stage alone);
plots/report.md: the results, what each phase of the study shows, paired comparisons of
the models (McNemar, on both test sets), the figures, and a diagnosis of each training run
(with the epoch it kept, from its run record in plots/<stage>/history.json); and data/export/<model>/: each model
as a TensorFlow SavedModel.

The exports are made here, one stage for all five, rather than by each training stage: a
model is exported exactly when it is scored, from the same file, and no training stage
gains a dependency on the export code.

The extended test set (data/split/arrays/extended.npz) is scored and reported, never used
for any choice."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stages.lib.params import UserError, load_params, run_stage
from stages.lib.study import (DESCRIPTIONS, EVALUATE_DIR, EXPORT_DIR, MODEL_NAMES, PLOTS_DIR, REPORT_FILE,
                              SUMMARY_FIGURES, TEST_METRICS, THRESHOLD, model_figure, model_file, read_classes, run_file,
                              model_scores_file)

STAGE = "evaluate"
# Per Grad-CAM grid: up to this many of the most confident errors, and as many of the most
# confidently correct images of each class. Bounded cost: at most 24 images per model.
GRADCAM_PER_GROUP = 8
# What the extended test set reports per model (metrics/runs/evaluate.json "extended").
EXTENDED_KEYS = ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "roc_auc", "n")


def predict(model, batch_size: int, images: np.ndarray) -> np.ndarray:
    """P(positive class) of `model` for each of `images` (raw RGB pixels, as every model takes)."""
    from stages.lib import datasets

    probs = model.predict(datasets.eval_batches(images, None, batch_size), verbose=0)
    return np.asarray(probs, dtype=np.float64).reshape(-1)


def gradcam_choice(labels: np.ndarray, probs: np.ndarray, k: int = GRADCAM_PER_GROUP) -> list[np.ndarray]:
    """Indices of the images a Grad-CAM grid shows, in three groups: the (at most k) most
    confident errors, then the k most confidently correct of the negative class, then of the
    positive class."""
    from stages.figures.report import confident_errors
    from stages.lib.metrics import predicted_labels

    labels = np.asarray(labels).astype(int)
    predicted = predicted_labels(probs)
    confidence = np.abs(np.asarray(probs, dtype=np.float64) - THRESHOLD)
    groups = [confident_errors(labels, probs, k)]
    for label in (0, 1):
        right = np.flatnonzero((labels == label) & (predicted == label))
        groups.append(right[np.argsort(-confidence[right], kind="stable")][:k])
    return groups


def gradcam_figure(name: str, model, test: dict, probs: np.ndarray, batch_size: int, path,
                   classes: tuple[str, str]) -> None:
    """Grad-CAM heatmaps (evidence for the predicted class) over the images of `gradcam_choice`,
    captioned with the class names."""
    from stages.lib.gradcam import grad_cam, last_conv_layer
    from stages.figures.evaluation import gradcam_grid

    labels = test["labels"].astype(int)
    errors, negatives, positives = gradcam_choice(labels, probs)
    chosen = np.concatenate([errors, negatives, positives]).astype(int)
    heatmaps, _ = grad_cam(model, test["images"][chosen], batch_size=batch_size)
    named, positive = np.array(classes), classes[1]
    titles = [f"{test['files'][i]}\n{named[labels[i]]} called {named[1 - labels[i]]}, P({positive}) {probs[i]:.3f}"
              for i in errors]
    titles += [f"{test['files'][i]}\n{named[labels[i]]}, right, P({positive}) {probs[i]:.3f}"
               for i in (*negatives, *positives)]
    title = (f"{name}: Grad-CAM at {last_conv_layer(model)}, evidence for the predicted class (red = most): "
             f"the {len(errors)} most confident errors, then the most confidently right {classes[0]} and "
             f"{classes[1]} images")
    gradcam_grid(test["images"][chosen], heatmaps, titles, path, title, columns=GRADCAM_PER_GROUP)


def prediction_frame(split: dict, probs: np.ndarray, classes: tuple[str, str]) -> pd.DataFrame:
    """Per image of `split` (datasets.load_split): file, actual and predicted class names,
    and p_positive, the probability of the positive class (classes[1])."""
    from stages.lib.metrics import predicted_labels

    named = np.array(classes)
    return pd.DataFrame({"file": split["files"], "actual": named[split["labels"].astype(int)],
                         "predicted": named[predicted_labels(probs)], "p_positive": probs.round(6)})


def compared_metrics(test: dict, extended: dict | None) -> dict:
    """What `dvc metrics show`, `dvc metrics diff` and `dvc exp show` hold for one model
    (model_scores_file): test accuracy with its 95% interval, ROC AUC, log loss, calibration
    (ECE) and the extended-test accuracy. The rest (precision, recall, counts, Brier) is in
    the run record and the report."""
    compared = {"accuracy": test["accuracy"], "ci_low": test["accuracy_ci_low"], "ci_high": test["accuracy_ci_high"],
                "roc_auc": test["roc_auc"], "log_loss": test["loss"], "ece": test["ece"],
                **({"extended_accuracy": extended["accuracy"]} if extended else {})}
    assert tuple(compared) == TEST_METRICS[:len(compared)], compared  # the order study.TEST_METRICS declares
    # Three decimals: accuracies are counts over 1000 images, and the table stays narrow.
    return {k: None if v is None else round(v, 3) for k, v in compared.items()}


def rounded(values: dict) -> dict:
    """Metrics for JSON: floats to 5 places; NaN (AUC of one class only) as null."""
    return {k: None if isinstance(v, float) and np.isnan(v) else round(v, 5) for k, v in values.items()}


def main() -> None:
    batch = load_params(STAGE)[STAGE]["batch_size"]
    missing = [str(model_file(m)) for m in MODEL_NAMES if not model_file(m).is_file()]
    if missing:  # say so before spending minutes on the models that are there
        raise UserError(f"{', '.join(missing)} not found: run the training stages first (dvc repro)")

    from stages.lib import models
    from stages.lib.datasets import load_split
    from stages.lib.export import export_savedmodel
    from stages.figures.evaluation import reliability_diagram
    from stages.lib.metrics import binary_metrics, brier_score, expected_calibration_error, reliability_curve, roc_curve
    from stages.lib.outputs import atomic_dir, write_csv, write_json
    from stages.figures.report import evaluation_figures, kept_epochs, misclassified_gallery, stage_curves, study_report

    results, predictions, reliability, extended_results, extended_predictions = {}, {}, {}, {}, {}
    classes = read_classes()
    test = load_split("test")
    extended = load_split("extended")  # possibly empty: split.extended_per_class 0, or nothing left over
    files, labels = test["files"], test["labels"]
    image_size = test["images"].shape[1]
    with atomic_dir(EVALUATE_DIR) as out, atomic_dir(EXPORT_DIR) as exports:
        for name in MODEL_NAMES:
            model = models.load(model_file(name))
            probs = predict(model, batch, test["images"])
            results[name] = {**binary_metrics(labels, probs), "ece": expected_calibration_error(labels, probs),
                             "brier": brier_score(labels, probs)}
            reliability[name] = reliability_curve(labels, probs)
            predictions[name] = prediction_frame(test, probs, classes)
            write_csv(out / "predictions" / f"{name}.csv", predictions[name])
            write_csv(out / "roc" / f"{name}.csv", pd.DataFrame(roc_curve(labels, probs)).round(6))
            write_csv(out / "reliability" / f"{name}.csv", pd.DataFrame(reliability[name]).round(6))
            misclassified_gallery(name, test, files, labels, probs, out / model_figure("misclassified", name), classes)
            gradcam_figure(name, model, test, probs, batch, out / model_figure("gradcam", name), classes)
            if len(extended["labels"]):
                extended_probs = predict(model, batch, extended["images"])
                scored = binary_metrics(extended["labels"], extended_probs)
                extended_results[name] = {k: scored[k] for k in EXTENDED_KEYS}
                extended_predictions[name] = prediction_frame(extended, extended_probs, classes)
                write_csv(out / "predictions_extended" / f"{name}.csv", extended_predictions[name])
            export_savedmodel(model, exports / name, image_size, classes)
            r = results[name]
            print(f"{name}: test accuracy {r['accuracy']:.3f}, AUC {r['roc_auc']:.3f}, ECE {r['ece']:.3f}"
                  + (f"; extended test accuracy {extended_results[name]['accuracy']:.3f} "
                     f"(n = {extended_results[name]['n']})" if name in extended_results else ""))
        accuracy = pd.DataFrame(
            [{"model": k, "accuracy": v["accuracy"], "ci_low": v["accuracy_ci_low"], "ci_high": v["accuracy_ci_high"]}
             for k, v in results.items()]
        )
        write_csv(out / "accuracy.csv", accuracy.round(4))
        evaluation_figures(results, predictions, out, classes)
        reliability_diagram(reliability, out / SUMMARY_FIGURES["reliability"], classes[1])
        stage_curves(list(MODEL_NAMES), PLOTS_DIR, out)
    record = {k: rounded(r) for k, r in results.items()}
    if extended_results:
        record["extended"] = {k: rounded(r) for k, r in extended_results.items()}
    write_json(run_file(STAGE), record)
    for name in MODEL_NAMES:
        write_json(model_scores_file(name), compared_metrics(record[name], record.get("extended", {}).get(name)))
    study_report(results, DESCRIPTIONS, PLOTS_DIR, REPORT_FILE, classes, extended_results, predictions,
                 extended_predictions, kept_epochs(list(MODEL_NAMES)))
    print(f"report: {REPORT_FILE}; SavedModels: {EXPORT_DIR}/")


if __name__ == "__main__":
    run_stage(main)
