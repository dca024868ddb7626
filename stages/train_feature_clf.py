"""Stage `train_feature_clf`: a small dense classifier on the saved VGG16 features.
Cheap (the conv base ran once), but it never sees an augmented image, so it overfits.

The classifier trains on features; the model it saves is the frozen conv base with this
head on top, raw pixels in and P(dog) out, so `evaluate`, `predict` and the exports treat
all five models alike."""

from __future__ import annotations

from stages import params as P
from stages.study import FEATURES_DIR, WEIGHTS_FILE

STAGE = "train_feature_clf"


def main() -> None:
    params = P.load("train", "vgg16", STAGE)
    cfg = params[STAGE]

    from stages import datasets as D, models as M, runtime as R, training as T

    R.configure(params["train"])
    train = D.load_arrays(FEATURES_DIR / "train.npz")
    val = D.load_arrays(FEATURES_DIR / "validation.npz")
    with R.strategy_scope(params["train"]):
        classifier = M.feature_classifier(train["features"].shape[1:], cfg["dense_units"], cfg["dropout"])
    run = T.train(
        STAGE, classifier, train["features"], train["labels"], val["features"], val["labels"], cfg, params,
        data_files=(FEATURES_DIR / "train.npz", FEATURES_DIR / "validation.npz"),
    )
    image_size = int(train["image_size"])
    with R.strategy_scope(params["train"]):
        conv_base = M.vgg16_conv_base(WEIGHTS_FILE, image_size)
        model = M.vgg16_with_head(conv_base, params["vgg16"]["preprocessing"], cfg["dense_units"], cfg["dropout"])
    T.copy_weights(run.model, model)
    T.save(STAGE, model, run)


if __name__ == "__main__":
    P.run_stage(main)
