"""Stage `train_custom`: Chollet's small convnet from scratch. Without dropout or
augmentation it overfits within a few epochs: that is the lesson. `train_custom_aug` runs
this same script on its own params section."""

from __future__ import annotations

import sys
import time

from stages import params as P


def main(stage: str = "train_custom") -> None:
    started = time.perf_counter()
    params = P.load("train", "augmentation", stage)
    cfg = params[stage]

    from stages import datasets as D, models as M, training as T  # TensorFlow loads only now

    T.configure(params["train"])
    train, val = D.load_split("train"), D.load_split("validation")
    with T.strategy_scope(params["train"]):
        model = M.custom_convnet(train["images"].shape[1], cfg["dropout"])
    T.train_on_images(stage, model, train, val, cfg, params, started, augment=cfg["augment"])


if __name__ == "__main__":
    P.run_stage(lambda: main(*sys.argv[1:]))
