"""Stage `evaluate`: every model on the same 1000 test images: metrics/evaluate.json
(accuracy with 95% interval, loss, ROC AUC, precision, recall, F1, confusion counts, n),
per model its predictions, ROC curve and most confidently misclassified images under
plots/evaluate/, and plots/report.md: the results, the figures, and a diagnosis of each
training run computed from its dvclive history (plots/<stage>/plots/metrics/*.tsv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages import params as P
from stages.images import CLASSES

MODELS_DIR = Path("data/models")
FEATURES_DIR = Path("data/features")
OUT_DIR = Path("plots/evaluate")
METRICS_FILE = Path("metrics/evaluate.json")
PLOTS_DIR = Path("plots")
REPORT_FILE = PLOTS_DIR / "report.md"
# The study's five models, in the order the story tells them.
MODELS = ("train_custom", "train_custom_aug", "train_feature_clf", "train_aug_frozen", "finetune")
DESCRIPTIONS = {
    "train_custom": "small convnet",
    "train_custom_aug": "+ dropout and augmentation",
    "train_feature_clf": "VGG16 features + dense",
    "train_aug_frozen": "frozen VGG16 + augmentation",
    "finetune": "fine-tuned block5",
}


def predict(name: str, batch_size: int, images: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(files, labels, P(dog)) of model `name` on the test split (`images`: its arrays)."""
    from stages import datasets as D, models as M

    test = D.load_arrays(FEATURES_DIR / "test.npz") if name == "train_feature_clf" else images
    inputs = test["features"] if name == "train_feature_clf" else test["images"]
    model = M.load(MODELS_DIR / f"{name}.keras")
    probs = model.predict(D.eval_batches(inputs, None, batch_size), verbose=0)
    return test["files"], test["labels"], np.asarray(probs, dtype=np.float64).reshape(-1)


def main() -> None:
    batch = P.load("evaluate")["evaluate"]["batch_size"]

    from stages.metrics import binary_metrics, roc_curve
    from stages.outputs import atomic_dir, write_csv, write_json
    from stages.datasets import load_split
    from stages.report import evaluation_figures, misclassified_gallery, study_report

    results, predictions = {}, {}
    test = load_split("test")
    with atomic_dir(OUT_DIR) as out:
        for name in MODELS:
            files, labels, probs = predict(name, batch, test)
            results[name] = binary_metrics(labels, probs)
            named = np.array(CLASSES)
            predictions[name] = pd.DataFrame(
                {
                    "file": files,
                    "actual": named[labels],
                    "predicted": named[(probs >= 0.5).astype(int)],
                    "p_dog": probs.round(6),
                }
            )
            write_csv(out / "predictions" / f"{name}.csv", predictions[name])
            write_csv(out / "roc" / f"{name}.csv", pd.DataFrame(roc_curve(labels, probs)).round(6))
            misclassified_gallery(name, test, files, labels, probs, out / f"misclassified_{name}.png")
            print(f"{name}: test accuracy {results[name]['accuracy']:.3f}, AUC {results[name]['roc_auc']:.3f}")
        accuracy = pd.DataFrame(
            [{"model": k, "accuracy": v["accuracy"], "ci_low": v["accuracy_ci_low"], "ci_high": v["accuracy_ci_high"]}
             for k, v in results.items()]
        )
        write_csv(out / "accuracy.csv", accuracy.round(4))
        evaluation_figures(results, predictions, out)
    write_json(METRICS_FILE, {k: {m: round(v, 5) for m, v in r.items()} for k, r in results.items()})
    study_report(results, DESCRIPTIONS, PLOTS_DIR, REPORT_FILE)
    print(f"report: {REPORT_FILE}")


if __name__ == "__main__":
    P.run_stage(main)
