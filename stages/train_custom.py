"""Stage `train_custom`: Chollet's small convnet from scratch. Without dropout or
augmentation it overfits within a few epochs: that is the lesson. `train_custom_aug` runs
this same script on its own params section."""

from __future__ import annotations

import sys

from stages import params as P
from stages.study import ARRAYS_DIR


def main(stage: str = "train_custom") -> None:
    params = P.load("train", "augmentation", stage)
    cfg = params[stage]

    from stages import datasets as D, models as M, runtime as R, training as T  # TensorFlow loads only now

    R.configure(params["train"])
    train, val = D.load_split("train"), D.load_split("validation")
    with R.strategy_scope(params["train"]):
        model = M.custom_convnet(train["images"].shape[1], cfg["dropout"])
    run = T.train(
        stage, model, train["images"], train["labels"], val["images"], val["labels"], cfg, params,
        data_files=(ARRAYS_DIR / "train.npz", ARRAYS_DIR / "validation.npz"), augment=cfg["augment"],
    )
    T.save(stage, run.model, run)


if __name__ == "__main__":
    P.run_stage(lambda: main(*sys.argv[1:]))
