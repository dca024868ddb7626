"""Figures for inspecting the trained models (matplotlib PNGs, drawn by `evaluate`): the
reliability diagram of all models on one chart, Grad-CAM heatmaps over test images, and the
image grid they share with the report's galleries."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI and servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stages.lib.metrics import calibration_error_of_curve  # noqa: E402
from stages.lib.outputs import save_figure  # noqa: E402

HEATMAP_ALPHA = 0.45  # enough colour to read the heatmap, enough image to see the animal


def reliability_diagram(curves: dict[str, dict], path: Path | str, positive: str) -> None:
    """Observed fraction of the positive class against its mean predicted probability per
    bin (P(dog) for cats vs. dogs, `positive` names the class), one line per model
    (curves from `metrics.reliability_curve`), over the diagonal of perfect calibration;
    below it, how many images each bin holds (log scale), since a bin of 3 images says little
    (marker areas show the same).
    Below the diagonal on the right = overconfident about the positive class; above it on
    the left = overconfident about the negative one."""
    if not curves:
        raise ValueError("no reliability curves to draw")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 8), sharex=True, height_ratios=(3, 1.2))
    top.plot([0, 1], [0, 1], color="gray", ls=":", lw=1, label="perfectly calibrated")
    for name, curve in curves.items():
        ece = calibration_error_of_curve(curve)
        line, = top.plot(curve["mean_predicted"], curve["observed_frequency"], "-", lw=1.2,
                         label=f"{name} (ECE {ece:.3f})")
        # Marker area grows with the bin's share of images: a zigzag through bins of 2
        # images is noise, not miscalibration.
        share = np.asarray(curve["count"]) / np.sum(curve["count"])
        top.scatter(curve["mean_predicted"], curve["observed_frequency"], s=8 + 200 * share,
                    color=line.get_color(), zorder=3)
        centres = (np.asarray(curve["bin_low"]) + np.asarray(curve["bin_high"])) / 2
        bottom.plot(centres, curve["count"], "o-", ms=3, color=line.get_color())
    top.set_ylabel(f"observed fraction of {positive}")
    top.set_xlim(0, 1)
    top.set_ylim(-0.02, 1.02)
    top.grid(alpha=0.3)
    top.legend(fontsize=8, loc="upper left")
    top.set_title(f"Reliability of P({positive}), {_bin_count(curves)} equal-width bins")
    bottom.set_yscale("log")
    bottom.set_ylabel("images in bin")
    bottom.set_xlabel(f"mean predicted P({positive}) in bin")
    bottom.grid(alpha=0.3)
    save_figure(path, fig)


def _bin_count(curves: dict[str, dict]) -> int:
    """Number of bins, from the width of one (curves list only their non-empty bins)."""
    curve = next(iter(curves.values()))
    return int(round(1 / (curve["bin_high"][0] - curve["bin_low"][0])))


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = HEATMAP_ALPHA) -> np.ndarray:
    """An RGB image (H, W, 3, 0-255) with a heatmap (H, W, in [0, 1]) blended over it in the
    jet colour map (blue = no evidence, red = most), as Chollet draws it; floats in [0, 1]."""
    colours = plt.get_cmap("jet")(np.clip(heatmap, 0, 1))[..., :3]
    return (1 - alpha) * np.asarray(image, dtype=np.float64) / 255.0 + alpha * colours


def gradcam_grid(images: np.ndarray, heatmaps: np.ndarray, titles: list[str], path: Path | str, title: str,
                 columns: int = 6) -> None:
    """Images with their Grad-CAM heatmaps overlaid, a caption under each (e.g. the file
    and P(positive class)), in a grid of `columns`."""
    if not (len(images) == len(heatmaps) == len(titles)):
        raise ValueError(f"{len(images)} images, {len(heatmaps)} heatmaps and {len(titles)} titles: need one of each")
    overlays = [overlay(image, heatmap) for image, heatmap in zip(images, heatmaps)]
    image_grid(overlays, titles, path, title, columns, cell=(2.2, 2.5), fontsize=8)


def image_grid(images, titles: list[str], path: Path | str, title: str, columns: int = 8,
               cell: tuple[float, float] = (2, 2.3), fontsize: float = 7) -> None:
    """Images in a grid of `columns`, a caption above each; `cell` is one image's (width,
    height) in inches."""
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(cell[0] * columns, cell[1] * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, text in zip(axes.flat, images, titles):
        ax.imshow(image)
        ax.set_title(text, fontsize=fontsize)
    fig.suptitle(title)
    save_figure(path, fig)
