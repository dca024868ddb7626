"""Stage `evaluate`: every model on the same 1000 test images, and the study's report.

metrics/evaluate.json (per model: accuracy with 95% interval, loss, ROC AUC, precision,
recall, F1, confusion counts, n); under plots/evaluate/ per model its predictions, ROC
curve, most confidently misclassified images and learning curves (drawn here from each
training stage's dvclive history, so a change to a figure reruns this stage alone); and
plots/report.md: the results, the figures, and a diagnosis of each training run."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stages import params as P
from stages.images import CLASSES
from stages.study import DESCRIPTIONS, EVALUATE_DIR, MODEL_NAMES, PLOTS_DIR, REPORT_FILE, metrics_file, model_file

STAGE = "evaluate"


def predict(name: str, batch_size: int, images: np.ndarray) -> np.ndarray:
    """P(dog) of model `name` for each of `images` (raw RGB pixels, as every model takes)."""
    from stages import datasets as D, models as M

    model = M.load(model_file(name))
    probs = model.predict(D.eval_batches(images, None, batch_size), verbose=0)
    return np.asarray(probs, dtype=np.float64).reshape(-1)


def main() -> None:
    batch = P.load(STAGE)[STAGE]["batch_size"]
    missing = [str(model_file(m)) for m in MODEL_NAMES if not model_file(m).is_file()]
    if missing:  # say so before spending minutes on the models that are there
        raise P.UserError(f"{', '.join(missing)} not found: run the training stages first (dvc repro)")

    from stages.datasets import load_split
    from stages.metrics import binary_metrics, roc_curve
    from stages.outputs import atomic_dir, write_csv, write_json
    from stages.report import evaluation_figures, misclassified_gallery, stage_curves, study_report

    results, predictions = {}, {}
    test = load_split("test")
    files, labels = test["files"], test["labels"]
    with atomic_dir(EVALUATE_DIR) as out:
        for name in MODEL_NAMES:
            probs = predict(name, batch, test["images"])
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
        stage_curves(list(MODEL_NAMES), PLOTS_DIR, out)
    write_json(metrics_file(STAGE), {k: {m: round(v, 5) for m, v in r.items()} for k, r in results.items()})
    study_report(results, DESCRIPTIONS, PLOTS_DIR, REPORT_FILE)
    print(f"report: {REPORT_FILE}")


if __name__ == "__main__":
    P.run_stage(main)
