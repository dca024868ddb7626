"""The study's shared facts, declared once: the classes and splits, the decision threshold,
which epoch counts as best, where each stage's data and figures live, and the five models in
the order the story tells them. Pure Python (no NumPy, TensorFlow or matplotlib), so any
stage, tool or test can import it cheaply."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# ---------------------------------------------------------------- classes, splits, decisions

SPLITS = ("train", "validation", "test")
# A model names the positive class when P(positive) >= THRESHOLD: in evaluate, the report,
# predict, the exports and Grad-CAM.
THRESHOLD = 0.5


def best_row(history: list[dict]) -> dict:
    """A run's best epoch: the lowest val_loss, the first one on ties. It is the epoch that
    `restore_best` keeps, that the metrics report as best and that the figures mark."""
    return min(history, key=lambda row: row["val_loss"])


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
README_FILE = Path("README.md")
# The study's two classes, declared once: `split` writes them here, from the data (sorted,
# as keras.utils.image_dataset_from_directory sorts its class folders) or as `split.classes`
# names them. Label 0 is the first, label 1 the second: the positive class, whose
# probability every model returns.
CLASSES_FILE = SPLIT_DIR / "classes.json"


def read_classes(classes_file: Path = CLASSES_FILE) -> tuple[str, str]:
    """(negative, positive) class names of the study, as `split` wrote them. A file that
    does not name two different classes (edited by hand, damaged) is a UserError."""
    from stages.lib.params import UserError

    path = Path(classes_file)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: run the split stage first (dvc repro split)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not JSON ({e}): it is written by the split stage; rerun it "
                        "(dvc repro --force split)") from None
    names = record.get("classes") if isinstance(record, dict) else None
    if not (isinstance(names, list) and len(names) == 2 and all(isinstance(n, str) and n for n in names)
            and names[0] != names[1]):
        raise UserError(f"{path}: 'classes' is {names!r}, two different class names are needed [negative, "
                        "positive]: it is written by the split stage; rerun it (dvc repro --force split)")
    return names[0], names[1]


def classes_record(classes: tuple[str, str]) -> dict:
    """What `split` writes to CLASSES_FILE."""
    return {"classes": list(classes), "positive": classes[1]}


def data_plots_dir(plots_dir: Path = PLOTS_DIR) -> Path:
    """The data figures `split` draws."""
    return plots_dir / "data"


def evaluate_dir(plots_dir: Path = PLOTS_DIR) -> Path:
    """What `evaluate` writes besides its metrics: predictions, curves and figures."""
    return plots_dir / "evaluate"


DATA_PLOTS_DIR = data_plots_dir()
EVALUATE_DIR = evaluate_dir()
REPORT_FILE = PLOTS_DIR / "report.md"

# The figures `evaluate` draws for all models at once, in evaluate_dir(); the report links them.
SUMMARY_FIGURES = {"accuracy": "accuracy.png", "roc": "roc.png", "confusion": "confusion.png",
                   "reliability": "reliability.png"}


def model_figure(kind: str, stage: str) -> str:
    """A per-model figure in evaluate_dir(): `misclassified` (confident errors), `gradcam`
    (where it looked) or `curves` (learning curves)."""
    if kind == "curves":
        return f"curves/{stage}.png"
    if kind in ("misclassified", "gradcam"):
        return f"{kind}_{stage}.png"
    raise ValueError(f"no per-model figure {kind!r}")

# What every training stage records per epoch (training and validation; history_file).
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


# ---------------------------------------------------------------- the five models


@dataclass(frozen=True)
class ModelSpec:
    stage: str  # the training stage that writes data/models/<stage>.keras
    description: str  # one line, for tables
    phase: int  # 1: small convnet from scratch, 2: VGG16 pre-trained on ImageNet


# Every saved model takes raw RGB pixels (0-255, image_size square) and returns P(positive
# class), label 1 in CLASSES_FILE.
MODELS = (
    ModelSpec("train_custom", "small convnet", 1),
    ModelSpec("train_custom_aug", "+ dropout and augmentation", 1),
    ModelSpec("train_feature_clf", "VGG16 features + dense", 2),
    ModelSpec("train_aug_frozen", "frozen VGG16 + augmentation", 2),
    ModelSpec("finetune", "fine-tuned block5", 2),
)
MODEL_NAMES = tuple(m.stage for m in MODELS)
DESCRIPTIONS = {m.stage: m.description for m in MODELS}

# The bar of each model: the test accuracy this project set itself to reach at the defaults,
# at or above the 1st edition's values for the same recipes. The README's results
# table holds one run against it, the seed table the mean of the seeds.
BARS = {"train_custom": 0.72, "train_custom_aug": 0.84, "train_feature_clf": 0.95, "train_aug_frozen": 0.96,
        "finetune": 0.975}


def bar_text(name: str, accuracy: float | None) -> str:
    """'.72: met' or '.975: short by .005' (a test accuracy against the model's bar), '-'
    for a model without one, '.72: -' without an accuracy."""
    if name not in BARS:
        return "-"
    bar = f"{BARS[name]:.3f}".rstrip("0").lstrip("0")
    if accuracy is None:
        return f"{bar}: -"
    gap = round(BARS[name] - accuracy, 6)  # counts over n (or their mean): rounding drops float noise at the bar
    return f"{bar}: met" if gap <= 0 else f"{bar}: short by {f'{gap:.3f}'.lstrip('0')}"


def model_file(stage: str) -> Path:
    return MODELS_DIR / f"{stage}.keras"


def artifacts() -> dict[str, dict]:
    """The `artifacts:` section of dvc.yaml, as it must read (tests/test_dag.py compares):
    one `model` artifact per trained model, named after its stage, so `dvc artifacts get`
    and DVC's model registry find the five models."""
    return {
        m.stage: {
            "path": model_file(m.stage).as_posix(),
            "type": "model",
            "desc": (f"Binary image classifier trained by stage {m.stage} ({m.description}): Keras 3, "
                     f"RGB pixels 0-255 in, P(positive class) out; the class names are in {CLASSES_FILE.as_posix()}"),
            "labels": ["image-classification", "keras", "small-convnet" if m.phase == 1 else "vgg16"],
        }
        for m in MODELS
    }


# Where each stage's numbers go. DVC metrics (what `dvc metrics show`, `dvc metrics diff` and
# `dvc exp show` print, a few numbers each, so the table fits a screen) are apart from the run
# records (everything a stage measured: timings, machine, all scores). A record is never an
# uncached `outs:` of a stage that takes long: DVC (3.67) saves no run-cache entry for a stage
# with one (tests/test_dvc_run_cache.py), so each record sits inside an output the stage has.


def metrics_file(stage: str, metrics_dir: Path = METRICS_DIR) -> Path:
    """A stage's DVC metrics. A training stage's: {"epochs", "kept_epoch", "val_accuracy"},
    the accuracy of the epoch whose weights it saved."""
    return metrics_dir / f"{stage}.json"


# What model_scores_file holds per model, in this order (evaluate.compared_metrics writes it).
TEST_METRICS = ("accuracy", "ci_low", "ci_high", "roc_auc", "log_loss", "ece", "extended_accuracy")


def model_scores_file(model: str, metrics_dir: Path = METRICS_DIR) -> Path:
    """`evaluate`'s DVC metrics of one model on the test split (and its accuracy on the
    extended test): one file per model, so that `dvc metrics show` prints one row per model."""
    return metrics_dir / "test" / f"{model}.json"


def run_file(stage: str, metrics_dir: Path = METRICS_DIR) -> Path:
    """A run record kept in git that is no DVC metric (an uncached `outs:` entry, so only
    for stages that take minutes, not hours: DVC keeps no run-cache for them): the images
    per split and class of `split`, and `evaluate`'s full record, per model every score it
    measured."""
    return metrics_dir / "runs" / f"{stage}.json"


def history_file(stage: str, plots_dir: Path = PLOTS_DIR) -> Path:
    """A training stage's history and run record, one JSON file and the stage's one `plots:`
    output (so the stage keeps its run-cache, and the plots page draws it once: as the
    stage's loss chart, dvc.yaml; its accuracy chart reads the same file):

        {"history": [{"epoch": 1, "split": "training", "loss": .., "accuracy": ..},
                     {"epoch": 1, "split": "validation", "loss": .., "accuracy": ..}, ...],
         "run": {what the run cost and kept: final and best losses and accuracies,
                 restored_epoch, seconds per epoch, images/s, wall seconds, CPU, precision}}

    Two rows per epoch (long form): one chart draws both splits, and `dvc plots diff`
    overlays the revisions. Written after every epoch (no "run" until the stage ends)."""
    return plots_dir / stage / "history.json"


# The history's splits, and the key each has in a history row in memory (`training.fit`).
HISTORY_SPLITS = {"training": "", "validation": "val_"}


def history_rows(history: list[dict]) -> list[dict]:
    """The file's long form of a history (per-epoch dicts with HISTORY_KEYS)."""
    return [{"epoch": int(row["epoch"]), "split": split, "loss": row[f"{prefix}loss"],
             "accuracy": row[f"{prefix}accuracy"]}
            for row in history for split, prefix in HISTORY_SPLITS.items()]


def read_history(path: Path | str) -> list[dict]:
    """A training stage's per-epoch history from its history_file: dicts with `epoch` and
    HISTORY_KEYS, in epoch order, as `training.fit` returned it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the training stage that writes it (dvc repro)")
    by_epoch: dict[int, dict] = {}
    for row in json.loads(path.read_text())["history"]:
        prefix = HISTORY_SPLITS[row["split"]]
        by_epoch.setdefault(int(row["epoch"]), {"epoch": int(row["epoch"])}).update(
            {f"{prefix}loss": float(row["loss"]), f"{prefix}accuracy": float(row["accuracy"])})
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def training_record(path: Path | str) -> dict:
    """A training stage's run record: the "run" of its history_file ({} if the file or
    the record is missing: a stage not run, or still running)."""
    path = Path(path)
    return json.loads(path.read_text()).get("run", {}) if path.is_file() else {}


# extract_features' run record: per pass (the features of the splits, the augmentation bank)
# its images, seconds and images/s, as the rows of a chart (images/s per pass); the bank's
# size, wall seconds, CPU, precision. No DVC metric (nothing it measures is compared
# between experiments); kept in git as the stage's `plots:` output, drawn as that one chart,
# so the stage keeps its run-cache and a clone without data has it.
FEATURES_RECORD_FILE = PLOTS_DIR / "extract_features" / "record.json"


def feature_passes(record: dict) -> dict[str, dict]:
    """extract_features' passes by name ("features", and "bank" when it built one)."""
    return {p["pass"]: p for p in record.get("passes", [])}


def seeds_dir(plots_dir: Path = PLOTS_DIR) -> Path:
    """The seed records (stages.tools.record_seeds): one JSON file per seed, a run of the study
    at the same params but train.seed, kept in git; `evaluate` reads them for the report."""
    return plots_dir / "experiments" / "seeds"


def seed_record_file(seed: int, plots_dir: Path = PLOTS_DIR) -> Path:
    return seeds_dir(plots_dir) / f"seed-{seed}.json"


def checkpoints_dir() -> Path:
    """Where training stages keep their per-epoch checkpoints (outside DVC's outputs).

    CATSDOGS_CHECKPOINTS moves them out of the work tree (e.g. ~/.cache/catsdogs/checkpoints),
    so an interrupted stage resumes even after the project was cloned afresh."""
    import os

    return Path(os.environ.get("CATSDOGS_CHECKPOINTS") or CHECKPOINTS_DIR).expanduser()
