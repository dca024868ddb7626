"""Stage `train_feature_clf`: a small dense classifier on the saved VGG16 features.
Cheap (the conv base ran once), but it never sees an augmented image, so it overfits."""

from __future__ import annotations

import time
from pathlib import Path

from stages import params as P

FEATURES_DIR = Path("data/features")
STAGE = "train_feature_clf"


def main() -> None:
    started = time.perf_counter()
    params = P.load("train", STAGE)
    cfg = params[STAGE]

    from stages import datasets as D, models as M, training as T

    T.configure(params["train"])
    train = D.load_arrays(FEATURES_DIR / "train.npz")
    val = D.load_arrays(FEATURES_DIR / "validation.npz")
    with T.strategy_scope(params["train"]):
        classifier = M.feature_classifier(train["features"].shape[1:], cfg["dense_units"], cfg["dropout"])
        T.compile_binary(classifier, cfg["learning_rate"])
    n, seed = len(train["labels"]), params["train"]["seed"]

    def make_train_ds(start_epoch):
        make_batch = D.plain_inputs(train["features"])
        return D.training_batches(n, train["labels"], cfg["batch_size"], seed, cfg["epochs"], make_batch, start_epoch)

    key = T.fingerprint(params, [FEATURES_DIR / "train.npz", FEATURES_DIR / "validation.npz"])
    val_ds = D.eval_batches(val["features"], val["labels"], cfg["batch_size"])
    classifier, history = T.fit(STAGE, classifier, make_train_ds, val_ds, cfg["epochs"], cfg["early_stopping"], key,
                                cfg["restore_best"])
    T.finish(STAGE, classifier, history, n, started, **T.restored(cfg, history))


if __name__ == "__main__":
    P.run_stage(main)
