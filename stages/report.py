"""Figures (matplotlib PNGs, for readers without DVC) of the data and of training runs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI and servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from stages.datasets import SPLITS  # noqa: E402
from stages.images import CLASSES  # noqa: E402
from stages.outputs import save_figure  # noqa: E402


def data_figures(index: pd.DataFrame, split_dir: Path, out_dir: Path) -> None:
    """Class counts per split, a labelled grid of training images, and image sizes."""
    counts = index.groupby(["split", "label"]).size().unstack("label").reindex(SPLITS)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    counts.plot.bar(ax=ax, rot=0, color=["#d08c2e", "#3b6ea8"])
    ax.set_ylabel("images")
    ax.set_title("Images per split and class (balanced by construction)")
    for container in ax.containers:
        ax.bar_label(container)
    save_figure(out_dir / "class_counts.png", fig)

    train = index[index["split"] == "train"]
    samples = pd.concat([train[train["label"] == c].head(8) for c in CLASSES])
    fig, axes = plt.subplots(2, 8, figsize=(16, 4.4))
    for ax, (_, row) in zip(axes.flat, samples.iterrows()):
        with Image.open(split_dir / "images" / "train" / f"{row['label']}s" / row["file"]) as im:
            ax.imshow(im.convert("RGB"))
        ax.set_title(f"{row['label']} ({row['file']})", fontsize=8)
        ax.axis("off")
    fig.suptitle("Training images as they come: every size and aspect, often more than one animal")
    save_figure(out_dir / "samples.png", fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for ax, column in zip(axes, ("width", "height")):
        for label in CLASSES:
            ax.hist(index.loc[index["label"] == label, column], bins=40, alpha=0.6, label=label)
        ax.set_xlabel(f"original {column} (px)")
        ax.legend()
    axes[0].set_ylabel("images")
    fig.suptitle("Original image sizes: all are resized to one square size, aspect not kept")
    save_figure(out_dir / "image_sizes.png", fig)


def training_curves(history: list[dict], title: str, path: Path) -> None:
    """Loss and accuracy per epoch, training and validation on the same axes."""
    frame = pd.DataFrame(history)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(frame["epoch"], frame[metric], "o-", ms=3, label=f"training {metric}")
        ax.plot(frame["epoch"], frame[f"val_{metric}"], "s-", ms=3, label=f"validation {metric}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    best = frame.loc[frame["val_loss"].idxmin()]
    axes[0].axvline(best["epoch"], color="gray", ls=":", lw=1)
    axes[0].annotate(f"min val_loss, epoch {int(best['epoch'])}", (best["epoch"], best["val_loss"]),
                     textcoords="offset points", xytext=(5, 10), fontsize=8)
    fig.suptitle(title)
    save_figure(path, fig)


def image_grid(images: np.ndarray, titles: list[str], path: Path, title: str, columns: int = 8) -> None:
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, text in zip(axes.flat, images, titles):
        ax.imshow(image)
        ax.set_title(text, fontsize=7)
    fig.suptitle(title)
    save_figure(path, fig)


def evaluation_figures(results: dict, predictions: dict, out_dir: Path) -> None:
    """Test accuracy per model (with 95% intervals), ROC curves, confusion matrices."""
    from stages.metrics import roc_curve

    names = list(results)
    acc = np.array([results[m]["accuracy"] for m in names])
    low = acc - np.array([results[m]["accuracy_ci_low"] for m in names])
    high = np.array([results[m]["accuracy_ci_high"] for m in names]) - acc
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh(names, acc, xerr=[low, high], color="#3b6ea8", capsize=4)
    for y, a in enumerate(acc):
        ax.text(a + high[y] + 0.005, y, f"{a:.3f}", va="center", fontsize=9)
    ax.set_xlim(0.5, 1.02)
    ax.invert_yaxis()
    ax.set_xlabel(f"test accuracy (n = {results[names[0]]['n']}, 95% Wilson interval)")
    save_figure(out_dir / "accuracy.png", fig)

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for m in names:
        frame = predictions[m]
        curve = roc_curve((frame["actual"] == "dog").to_numpy(), frame["p_dog"].to_numpy())
        ax.plot(curve["fpr"], curve["tpr"], label=f"{m} (AUC {results[m]['roc_auc']:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.set_xlabel("false positive rate (cats called dogs)")
    ax.set_ylabel("true positive rate (dogs found)")
    ax.legend(fontsize=8, loc="lower right")
    save_figure(out_dir / "roc.png", fig)

    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2))
    for ax, m in zip(np.atleast_1d(axes), names):
        r = results[m]
        matrix = np.array([[r["tn"], r["fp"]], [r["fn"], r["tp"]]])
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(1, matrix.sum() // 2))
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, str(v), ha="center", va="center", color="black")
        ax.set_xticks([0, 1], CLASSES)
        ax.set_yticks([0, 1], CLASSES)
        ax.set_xlabel("predicted")
        ax.set_title(m, fontsize=9)
    np.atleast_1d(axes)[0].set_ylabel("actual")
    save_figure(out_dir / "confusion.png", fig)
