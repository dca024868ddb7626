"""requirements.txt installs on the laptops students have: every pinned line resolves to a
wheel for Linux x86-64, macOS arm64 (Apple Silicon) and Windows x86-64 at each Python
version the README names, without installing anything (pip's dry run, one query per
platform to the package index that CI installs from anyway)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from packaging.requirements import Requirement

from helpers import ROOT

PYTHONS = ("3.11", "3.12", "3.13")  # README, Quick start
PLATFORMS = {  # pip --platform tags, and the marker environment of such a machine
    "linux-x86_64": (
        ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
        {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix"},
    ),
    "macos-arm64": (
        ["macosx_14_0_arm64", "macosx_12_0_arm64", "macosx_11_0_arm64"],
        {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64", "os_name": "posix"},
    ),
    "windows-x86_64": (
        ["win_amd64"],
        {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64", "os_name": "nt"},
    ),
}


def requirements() -> list[Requirement]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [Requirement(line.split(" #")[0].strip()) for line in lines if line.strip() and not line.startswith("#")]


def for_machine(platform: str, python: str) -> list[str]:
    """The pins that apply on that machine (markers evaluated for it, not for this one)."""
    env = {**PLATFORMS[platform][1], "python_version": python, "python_full_version": f"{python}.0"}
    return [f"{r.name}{r.specifier}" for r in requirements() if r.marker is None or r.marker.evaluate(env)]


def test_markers_pick_one_tensorflow_per_platform():
    for platform in PLATFORMS:
        tf = [p for p in for_machine(platform, "3.11") if p.startswith("tensorflow")]
        assert tf == (["tensorflow==2.21.0"] if platform == "macos-arm64" else ["tensorflow-cpu==2.21.0"]), platform


def index_reachable() -> bool:
    probe = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "pyyaml"], capture_output=True, text=True,
                           timeout=60)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_every_pin_has_a_wheel(platform, python, tmp_path):
    if not index_reachable():
        pytest.skip("the package index is not reachable from here")
    tags = [arg for tag in PLATFORMS[platform][0] for arg in ("--platform", tag)]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps", "--ignore-installed",
         "--only-binary=:all:", *tags, "--python-version", python, "--target", str(tmp_path),
         *for_machine(platform, python)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"{platform}, Python {python}:\n{result.stderr[-2000:]}"
