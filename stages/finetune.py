"""Stage `finetune`: start from `train_aug_frozen`'s model, unfreeze the top conv block
(block5) and train it with the head at a low learning rate on augmented images."""

from __future__ import annotations

import time
from pathlib import Path

from stages import params as P

FROZEN_MODEL = Path("data/models/train_aug_frozen.keras")
STAGE = "finetune"


def main() -> None:
    started = time.perf_counter()
    params = P.load("train", "augmentation", STAGE)
    cfg = params[STAGE]

    from stages import datasets as D, models as M, training as T

    T.configure(params["train"])
    train, val = D.load_split("train"), D.load_split("validation")
    with T.strategy_scope(params["train"]):
        model = M.load(FROZEN_MODEL)
        M.unfreeze(model, cfg["unfreeze"])
    T.train_on_images(
        STAGE, model, train, val, cfg, params, started,
        augment=True, bank=cfg["augment_bank"], inputs=(FROZEN_MODEL,),
    )


if __name__ == "__main__":
    P.run_stage(main)
