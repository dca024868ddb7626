"""Stage `extract_features`: run the frozen VGG16 conv base once over every split and save
its output (4x4x512 at 150 px) with the labels, for `train_feature_clf`."""

from __future__ import annotations

import time

import numpy as np

from stages import params as P
from stages.images import SPLITS
from stages.study import FEATURES_DIR, WEIGHTS_FILE, metrics_file

STAGE = "extract_features"


def main() -> None:
    started = time.perf_counter()
    params = P.load("train", "vgg16", STAGE)
    batch = params[STAGE]["batch_size"]

    from stages import datasets as D, models as M, runtime as R
    from stages.outputs import atomic_dir, save_npz, write_json

    R.configure(params["train"])
    seconds, images = 0.0, 0
    with atomic_dir(FEATURES_DIR) as out:
        for name in SPLITS:
            split = D.load_split(name)
            image_size = split["images"].shape[1]
            if name == "train":
                conv_base = M.vgg16_conv_base(WEIGHTS_FILE, image_size)
                extractor = M.vgg16_extractor(conv_base, params["vgg16"]["preprocessing"])
            t = time.perf_counter()
            features = D.run_model(
                lambda x: extractor(x, training=False),
                D.eval_batches(split["images"], None, batch),
                len(split["images"]),
                extractor.output.shape[1:],
                np.float32,
            )
            seconds += time.perf_counter() - t
            images += len(features)
            save_npz(out / f"{name}.npz", features=features, labels=split["labels"], files=split["files"],
                     image_size=np.int32(image_size))
            print(f"{name}: features {features.shape}")
    write_json(
        metrics_file(STAGE),
        {
            "images": images,
            "images_per_second": round(images / seconds, 1),
            "feature_size": int(np.prod(extractor.output.shape[1:])),
            "wall_seconds": round(time.perf_counter() - started, 1),
        },
    )


if __name__ == "__main__":
    P.run_stage(main)
