"""The inspection figures: a reliability diagram of several models and a Grad-CAM grid."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stages.figures.evaluation import gradcam_grid, overlay, reliability_diagram
from stages.lib.metrics import reliability_curve


def test_reliability_diagram_of_several_models(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    curves = {
        "calibrated": reliability_curve(labels, np.clip(labels * 0.6 + 0.2 + rng.normal(0, 0.1, 500), 0, 1)),
        "overconfident": reliability_curve(labels, np.where(rng.uniform(size=500) < 0.8, labels, 1 - labels) * 1.0),
    }
    path = tmp_path / "evaluate" / "reliability.png"
    reliability_diagram(curves, path, "dog")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 300
    assert not list(path.parent.glob(".*"))  # no temporary file left behind
    with pytest.raises(ValueError, match="no reliability curves"):
        reliability_diagram({}, tmp_path / "empty.png", "dog")


def test_overlay_colours_the_evidence_red_and_the_rest_blue():
    grey = np.full((20, 20, 3), 128, np.uint8)
    heatmap = np.zeros((20, 20))
    heatmap[:10, 10:] = 1.0  # evidence in the top-right quadrant
    blended = overlay(grey, heatmap)
    assert blended.shape == (20, 20, 3) and blended.min() >= 0 and blended.max() <= 1
    hot, cold = blended[0, 19], blended[19, 0]
    assert hot[0] > hot[2] + 0.2  # red dominates where the heatmap is 1
    assert cold[2] > cold[0] + 0.2  # blue where it is 0


def test_gradcam_grid(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    heatmaps = rng.uniform(size=(7, 32, 32)).astype(np.float32)
    titles = [f"cat.{i}.jpg P(dog)=0.{i}" for i in range(7)]
    path = tmp_path / "gradcam_train_custom.png"
    gradcam_grid(images, heatmaps, titles, path, "train_custom: most confident errors", columns=4)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > im.height  # 2 rows of 4
    with pytest.raises(ValueError, match="need one of each"):
        gradcam_grid(images, heatmaps[:3], titles, tmp_path / "bad.png", "bad")
