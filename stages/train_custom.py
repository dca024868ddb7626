"""Stage `train_custom`: Chollet's small convnet from scratch. Without dropout or
augmentation it overfits within a few epochs: that is the lesson. `train_custom_aug` runs
this same script on its own params section."""

from __future__ import annotations

from stages.lib.params import load_params, run_stage
from stages.lib.study import ARRAYS_DIR


def main(stage: str = "train_custom") -> None:
    params = load_params("train", "augmentation", stage)
    cfg = params[stage]

    from stages.lib import datasets, models, runtime, training  # TensorFlow loads only now

    runtime.configure(params["train"])
    train, val = datasets.load_split("train"), datasets.load_split("validation")
    with runtime.strategy_scope(params["train"]):
        model = models.custom_convnet(train["images"].shape[1], cfg["dropout"])
    run = training.train(
        stage, model, train["images"], train["labels"], val["images"], val["labels"], cfg, params,
        data_files=(ARRAYS_DIR / "train.npz", ARRAYS_DIR / "validation.npz"), augment=cfg["augment"],
    )
    training.save(stage, run.model, run)


if __name__ == "__main__":
    run_stage(main)
