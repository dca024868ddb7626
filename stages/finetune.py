"""Stage `finetune`: start from `train_aug_frozen`'s model, unfreeze the top conv block
(block5) and train it with the head at a low learning rate on augmented images: with
`vgg16.augment_bank: K`, the block4 activations of extract_features' K augmented copies."""

from __future__ import annotations

from stages import params as P
from stages.study import model_file

STAGE = "finetune"
FROZEN_MODEL = model_file("train_aug_frozen")


def main() -> None:
    params = P.load("train", "augmentation", "vgg16", STAGE)
    cfg = params[STAGE]

    from stages import datasets as D, models as M, runtime as R, training as T

    R.configure(params["train"])
    train, val = D.load_split("train"), D.load_split("validation")
    with R.strategy_scope(params["train"]):
        model = M.load(FROZEN_MODEL)
        M.unfreeze(model, cfg["unfreeze"])
    T.train_vgg16_augmented(STAGE, model, train, val, params, start_file=FROZEN_MODEL)


if __name__ == "__main__":
    P.run_stage(main)
