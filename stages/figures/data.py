"""The data-analysis figures of `split` (matplotlib PNGs under plots/data/): class counts
per split, a grid of training images as they come, and the original image sizes. Only
`split` imports this, so a change here reruns `split` alone."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI and servers
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from stages.lib.study import SPLITS  # noqa: E402
from stages.lib.outputs import save_figure  # noqa: E402


def data_figures(index: pd.DataFrame, classes: tuple[str, str], split_dir: Path, out_dir: Path,
                 folders: dict[str, str]) -> None:
    """Class counts per split, a labelled grid of training images, and image sizes.
    `folders`: each class's folder under split_dir/images/<split>/."""
    counts = index.groupby(["split", "label"]).size().unstack("label").reindex(index=SPLITS, columns=list(classes))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    counts.plot.bar(ax=ax, rot=0, color=["#d08c2e", "#3b6ea8"])
    ax.set_ylabel("images")
    ax.set_title("Images per split and class")
    for container in ax.containers:
        ax.bar_label(container)
    save_figure(out_dir / "class_counts.png", fig)

    train = index[index["split"] == "train"]
    samples = pd.concat([train[train["label"] == c].head(8) for c in classes])
    fig, axes = plt.subplots(2, 8, figsize=(16, 4.4))
    for ax, (_, row) in zip(axes.flat, samples.iterrows()):
        with Image.open(split_dir / "images" / "train" / folders[row["label"]] / row["file"]) as im:
            ax.imshow(im.convert("RGB"))
        ax.set_title(f"{row['label']} ({row['file']})", fontsize=8)
        ax.axis("off")
    fig.suptitle("Training images as they come: every size and aspect")
    save_figure(out_dir / "samples.png", fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for ax, column in zip(axes, ("width", "height")):
        for label in classes:
            ax.hist(index.loc[index["label"] == label, column], bins=40, alpha=0.6, label=label)
        ax.set_xlabel(f"original {column} (px)")
        ax.legend()
    axes[0].set_ylabel("images")
    fig.suptitle("Original image sizes: all are resized to one square size, aspect not kept")
    save_figure(out_dir / "image_sizes.png", fig)
