"""Stage `finetune`: start from `train_aug_frozen`'s model, unfreeze the top conv block
(block5) and train it with the head at a low learning rate on augmented images."""

from __future__ import annotations

from stages import params as P
from stages.study import ARRAYS_DIR, model_file

STAGE = "finetune"
FROZEN_MODEL = model_file("train_aug_frozen")


def main() -> None:
    params = P.load("train", "augmentation", STAGE)
    cfg = params[STAGE]

    from stages import datasets as D, models as M, runtime as R, training as T

    R.configure(params["train"])
    train, val = D.load_split("train"), D.load_split("validation")
    with R.strategy_scope(params["train"]):
        model = M.load(FROZEN_MODEL)
        M.unfreeze(model, cfg["unfreeze"])
    run = T.train(
        STAGE, model, train["images"], train["labels"], val["images"], val["labels"], cfg, params,
        data_files=(ARRAYS_DIR / "train.npz", ARRAYS_DIR / "validation.npz", FROZEN_MODEL),
        augment=True, bank=cfg["augment_bank"],
    )
    T.save(STAGE, run.model, run)


if __name__ == "__main__":
    P.run_stage(main)
