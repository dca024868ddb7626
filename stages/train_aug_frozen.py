"""Stage `train_aug_frozen`: VGG16's frozen conv base with a dense head, trained end to
end on augmented images. With `augment_bank: K` the frozen base sees K augmented copies
of each image once, instead of a fresh copy every epoch."""

from __future__ import annotations

import time
from pathlib import Path

from stages import params as P

WEIGHTS_FILE = Path("data/weights/vgg16_notop.weights.h5")
STAGE = "train_aug_frozen"


def main() -> None:
    started = time.perf_counter()
    params = P.load("train", "augmentation", "vgg16", STAGE)
    cfg = params[STAGE]

    from stages import datasets as D, models as M, training as T

    T.configure(params["train"])
    train, val = D.load_split("train"), D.load_split("validation")
    with T.strategy_scope(params["train"]):
        conv_base = M.vgg16_conv_base(WEIGHTS_FILE, train["images"].shape[1])
        model = M.vgg16_with_head(conv_base, params["vgg16"]["preprocessing"], cfg["dense_units"], cfg["dropout"])
    T.train_on_images(
        STAGE, model, train, val, cfg, params, started,
        augment=True, bank=cfg["augment_bank"], inputs=(WEIGHTS_FILE,),
    )


if __name__ == "__main__":
    P.run_stage(main)
