"""Shared fixtures, and the skip of the tests marked `real_data` where ../shared is absent.
The plain helpers (paths, synthetic data, a throw-away git + DVC copy of the project) are
in helpers.py; the markers are registered in pytest.ini."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import shared_missing


def pytest_collection_modifyitems(config, items):
    """`real_data` tests read the real images and weights in ../shared: skipped, with the
    reason, where they are not there."""
    reason = shared_missing()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("real_data"):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def random_vgg16_weights(tmp_path_factory) -> Path:
    """A random-init VGG16 notop weights file in Keras 3 format (real ones are in ../shared)."""
    import keras

    path = tmp_path_factory.mktemp("weights") / "vgg16_random.weights.h5"
    keras.utils.set_random_seed(0)
    keras.applications.VGG16(weights=None, include_top=False).save_weights(str(path))
    return path
