"""Stage `train_feature_clf`: a small dense classifier on the saved VGG16 features.
Cheap (the conv base ran once), but it never sees an augmented image, so it overfits.

The classifier trains on features; the model it saves is the frozen conv base with this
head on top, raw pixels in and P(dog) out, so `evaluate`, `predict` and the exports treat
all five models alike."""

from __future__ import annotations

from stages.lib.params import load_params, run_stage
from stages.lib.study import FEATURES_DIR, WEIGHTS_FILE

STAGE = "train_feature_clf"


def main() -> None:
    params = load_params("train", "vgg16", STAGE)
    cfg = params[STAGE]

    from stages.lib import datasets, models, runtime, training

    runtime.configure(params["train"])
    train = datasets.load_arrays(FEATURES_DIR / "train.npz")
    val = datasets.load_arrays(FEATURES_DIR / "validation.npz")
    with runtime.strategy_scope(params["train"]):
        classifier = models.feature_classifier(train["features"].shape[1:], cfg["dense_units"], cfg["dropout"])
    run = training.train(
        STAGE, classifier, train["features"], train["labels"], val["features"], val["labels"], cfg, params,
        data_files=(FEATURES_DIR / "train.npz", FEATURES_DIR / "validation.npz"),
    )
    image_size = int(train["image_size"])
    with runtime.strategy_scope(params["train"]):
        conv_base = models.vgg16_conv_base(WEIGHTS_FILE, image_size)
        model = models.vgg16_with_head(conv_base, params["vgg16"]["preprocessing"], cfg["dense_units"], cfg["dropout"])
    training.copy_weights(run.model, model)
    training.save(STAGE, model, run)


if __name__ == "__main__":
    run_stage(main)
