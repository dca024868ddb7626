"""Stage `train_custom_aug`: the same convnet with dropout before the dense layer and
data augmentation (params section `train_custom_aug`), so it overfits far later."""

from stages.lib.params import run_stage
from stages.train_custom import main

if __name__ == "__main__":
    run_stage(lambda: main("train_custom_aug"))
