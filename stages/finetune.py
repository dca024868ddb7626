"""Stage `finetune`: start from `train_aug_frozen`'s model, unfreeze the top conv block
(block5) and train it with the head at a low learning rate on augmented images: with
`vgg16.augment_bank: K`, the block4 activations of extract_features' K augmented copies."""

from __future__ import annotations

from stages.lib.params import load_params, run_stage
from stages.lib.study import model_file

STAGE = "finetune"
FROZEN_MODEL = model_file("train_aug_frozen")


def main() -> None:
    params = load_params("train", "augmentation", "vgg16", STAGE)
    cfg = params[STAGE]

    from stages.lib import models, training

    def build_model(image_size: int):
        model = models.load(FROZEN_MODEL)
        models.unfreeze(model, cfg["unfreeze"])
        return model

    training.train_vgg16_augmented(STAGE, build_model, params, start_file=FROZEN_MODEL)


if __name__ == "__main__":
    run_stage(main)
