"""The study's shared facts, declared once: where each stage's data lives, and the five
models in the order the story tells them. Pure Python (no TensorFlow, no matplotlib), so
any stage, `readme_table` and the tests can import it cheaply."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# ---------------------------------------------------------------- paths (relative to the project root)

RAW_DIR = Path("data/raw")
WEIGHTS_FILE = Path("data/weights/vgg16_notop.weights.h5")
SPLIT_DIR = Path("data/split")
ARRAYS_DIR = SPLIT_DIR / "arrays"
FEATURES_DIR = Path("data/features")
BANK_FILE = FEATURES_DIR / "bank.npz"  # the augmentation bank (extract_features)
MODELS_DIR = Path("data/models")
EXPORT_DIR = Path("data/export")  # SavedModels, written by `evaluate`
CHECKPOINTS_DIR = Path("data/checkpoints")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
DATA_PLOTS_DIR = PLOTS_DIR / "data"
EVALUATE_DIR = PLOTS_DIR / "evaluate"
REPORT_FILE = PLOTS_DIR / "report.md"

# What every training stage logs per epoch (dvclive TSVs under plots/<stage>/).
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


# ---------------------------------------------------------------- the five models


@dataclass(frozen=True)
class ModelSpec:
    stage: str  # the training stage that writes data/models/<stage>.keras
    description: str  # one line, for tables
    phase: int  # 1: small convnet from scratch, 2: VGG16 pre-trained on ImageNet


# Every saved model takes raw RGB pixels (0-255, image_size square) and returns P(dog).
MODELS = (
    ModelSpec("train_custom", "small convnet", 1),
    ModelSpec("train_custom_aug", "+ dropout and augmentation", 1),
    ModelSpec("train_feature_clf", "VGG16 features + dense", 2),
    ModelSpec("train_aug_frozen", "frozen VGG16 + augmentation", 2),
    ModelSpec("finetune", "fine-tuned block5", 2),
)
MODEL_NAMES = tuple(m.stage for m in MODELS)
DESCRIPTIONS = {m.stage: m.description for m in MODELS}


def model_file(stage: str) -> Path:
    return MODELS_DIR / f"{stage}.keras"


def export_dir(stage: str) -> Path:
    """The model's TensorFlow SavedModel (stages/lib/export.py; signature serving_default)."""
    return EXPORT_DIR / stage


def artifacts() -> dict[str, dict]:
    """The `artifacts:` section of dvc.yaml, as it must read (tests/test_dag.py compares):
    one `model` artifact per trained model, named after its stage, so `dvc artifacts get`
    and DVC's model registry find the five models."""
    return {
        m.stage: {
            "path": model_file(m.stage).as_posix(),
            "type": "model",
            "desc": f"Cats vs. dogs, trained by stage {m.stage} ({m.description}): Keras 3, RGB pixels in, P(dog) out",
            "labels": ["cats-vs-dogs", "keras", "small-convnet" if m.phase == 1 else "vgg16"],
        }
        for m in MODELS
    }


def metrics_file(stage: str) -> Path:
    return METRICS_DIR / f"{stage}.json"


def history_dir(stage: str) -> Path:
    """The dvclive folder of a training stage (plots/<stage>/plots/metrics/*.tsv inside)."""
    return PLOTS_DIR / stage


def checkpoints_dir() -> Path:
    """Where training stages keep their per-epoch checkpoints (outside DVC's outputs).

    CATSDOGS_CHECKPOINTS moves them out of the work tree (e.g. ~/.cache/catsdogs/checkpoints),
    so an interrupted stage resumes even after the project was cloned afresh."""
    import os

    return Path(os.environ.get("CATSDOGS_CHECKPOINTS") or CHECKPOINTS_DIR).expanduser()
