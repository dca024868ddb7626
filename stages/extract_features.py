"""Stage `extract_features`: all the frozen VGG16 work of the study, once.

- Features: the conv base over every split (4x4x512 at 150 px), for `train_feature_clf`.
- The augmentation bank (`vgg16.augment_bank: K`): K augmented copies of each training
  image through blocks 1-4 (block4_pool, 9x9x512 at 150 px) and the validation images'
  block4_pool activations, stored as float16, for `train_aug_frozen` and `finetune`. Copy k
  is exactly what the online path feeds block 5 in epoch k (same seed, same augmentation
  draws), so both stages train as if they augmented every epoch, at a fraction of the cost.
- Its run record, plots/extract_features/record.json (study.FEATURES_RECORD_FILE): images,
  seconds and images/s per pass (the plots page's chart of it), the bank's size, wall
  seconds, CPU and precision. Kept in git as a `plots:` output,
  not an uncached `outs:`, so the stage keeps its run-cache (see study.py, "Where each
  stage's numbers go"), and a clone without the data still has it (the README's table).
"""

from __future__ import annotations

import time

import numpy as np

from stages.lib.params import UserError, load_params, run_stage
from stages.lib.study import SPLITS, BANK_FILE, FEATURES_DIR, FEATURES_RECORD_FILE, WEIGHTS_FILE

STAGE = "extract_features"
BANK_DTYPE = np.float16  # half the bytes of float32; benchmarks/ measure what it changes


def main() -> None:
    started = time.perf_counter()
    params = load_params("train", "augmentation", "vgg16", STAGE)
    batch, copies = params[STAGE]["batch_size"], params["vgg16"]["augment_bank"]

    from stages.lib import datasets, models, runtime
    from stages.lib.outputs import atomic_dir, save_npz, write_json

    runtime.configure(params["train"])
    splits = {name: datasets.load_split(name) for name in SPLITS}
    image_size = splits["train"]["images"].shape[1]
    conv_base = models.vgg16_conv_base(WEIGHTS_FILE, image_size)
    to_block4, block5 = models.vgg16_bank_split(conv_base, params["vgg16"]["preprocessing"])
    import tensorflow as tf

    block4_dtype = tf.as_dtype(to_block4.output.dtype).as_numpy_dtype  # the compute dtype: bf16 under mixed_bfloat16
    timings = {}
    with atomic_dir(FEATURES_DIR) as out:
        t = time.perf_counter()
        block4 = {}
        for name, split in splits.items():
            # Blocks 1-4 then block 5: the same computation as the whole base in one pass.
            block4[name] = datasets.run_model(lambda x: to_block4(x, training=False),
                                              datasets.eval_batches(split["images"], None, batch),
                                              len(split["images"]), to_block4.output.shape[1:], block4_dtype)
            features = datasets.run_model(lambda x: block5(x, training=False), datasets.eval_batches(block4[name], None, batch),
                                          len(block4[name]), block5.output.shape[1:], np.float32)
            save_npz(out / f"{name}.npz", features=features, labels=split["labels"], files=split["files"],
                     image_size=np.int32(image_size))
            print(f"{name}: features {features.shape}")
        timings["features_seconds"] = time.perf_counter() - t

        t = time.perf_counter()
        train = splits["train"]
        if copies:
            print(f"augmentation bank: {copies} copies of {len(train['images'])} images through VGG16 blocks 1-4")
        bank = datasets.build_bank(to_block4, train["images"], copies, params["train"]["seed"], params["augmentation"],
                                   batch, dtype=BANK_DTYPE)
        validation = block4["validation"].astype(BANK_DTYPE) if copies else bank[:0]
        if not (np.isfinite(bank).all() and np.isfinite(validation).all()):
            raise UserError(f"{BANK_FILE}: block4 activations overflow float16; use train.precision: float32")
        save_npz(out / BANK_FILE.name, train=bank, train_labels=train["labels"], validation=validation,
                 validation_labels=splits["validation"]["labels"], copies=np.int32(copies),
                 layer=np.array(models.BANK_LAYER))
        timings["bank_seconds"] = time.perf_counter() - t

    images = sum(len(s["images"]) for s in splits.values())
    passes = [("features", images, timings["features_seconds"]),
              ("bank", copies * len(train["images"]), timings["bank_seconds"])]
    write_json(
        FEATURES_RECORD_FILE,
        {
            # the rows of its chart on the plots page (images/s per pass); no bank, no row
            "passes": [{"pass": name, "images": n, "seconds": round(seconds, 1),
                        "images_per_second": round(n / seconds, 1)} for name, n, seconds in passes if n],
            "feature_size": int(np.prod(block5.output.shape[1:])),
            "bank_bytes": int(bank.nbytes + validation.nbytes),
            "wall_seconds": round(time.perf_counter() - started, 1),
            **runtime.machine(),
        },
    )


if __name__ == "__main__":
    run_stage(main)
