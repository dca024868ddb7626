"""Stage `train_aug_frozen`: VGG16's frozen conv base with a dense head, trained end to
end on augmented images. With `augment_bank: K` the frozen base sees K augmented copies
of each image once, instead of a fresh copy every epoch."""

from __future__ import annotations

from stages import params as P
from stages.study import ARRAYS_DIR, WEIGHTS_FILE

STAGE = "train_aug_frozen"


def main() -> None:
    params = P.load("train", "augmentation", "vgg16", STAGE)
    cfg = params[STAGE]

    from stages import datasets as D, models as M, runtime as R, training as T

    R.configure(params["train"])
    train, val = D.load_split("train"), D.load_split("validation")
    with R.strategy_scope(params["train"]):
        conv_base = M.vgg16_conv_base(WEIGHTS_FILE, train["images"].shape[1])
        model = M.vgg16_with_head(conv_base, params["vgg16"]["preprocessing"], cfg["dense_units"], cfg["dropout"])
    run = T.train(
        STAGE, model, train["images"], train["labels"], val["images"], val["labels"], cfg, params,
        data_files=(ARRAYS_DIR / "train.npz", ARRAYS_DIR / "validation.npz", WEIGHTS_FILE),
        augment=True, bank=cfg["augment_bank"],
    )
    T.save(STAGE, run.model, run)


if __name__ == "__main__":
    P.run_stage(main)
