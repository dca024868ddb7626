"""Stage `train_aug_frozen`: VGG16's frozen conv base with a dense head, trained end to
end on augmented images. With `vgg16.augment_bank: K` it trains on the K augmented copies
that extract_features pushed through blocks 1-4 (block 5 runs over them once here),
instead of running the whole base over a fresh copy every epoch."""

from __future__ import annotations

from stages.lib.params import load_params, run_stage
from stages.lib.study import WEIGHTS_FILE

STAGE = "train_aug_frozen"


def main() -> None:
    params = load_params("train", "augmentation", "vgg16", STAGE)
    cfg = params[STAGE]

    from stages.lib import models, training

    def build_model(image_size: int):
        conv_base = models.vgg16_conv_base(WEIGHTS_FILE, image_size)
        return models.vgg16_with_head(conv_base, params["vgg16"]["preprocessing"], cfg["dense_units"], cfg["dropout"])

    training.train_vgg16_augmented(STAGE, build_model, params, start_file=WEIGHTS_FILE)


if __name__ == "__main__":
    run_stage(main)
