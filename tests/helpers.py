"""Plain helpers of the tests (fixtures live in conftest.py): where the project and the real
data are, tiny synthetic data sets, and a throw-away copy of the project as a git + DVC
repository, so that tests run the real `dvc repro` without touching this checkout.

Imported as `from helpers import ...` (pytest.ini puts tests/ and the project root on
sys.path)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from stages.lib.study import MODEL_NAMES, seeds_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_IMAGES = SHARED / "datasets" / "dogs-vs-cats" / "train"
SHARED_WEIGHTS = SHARED / "weights" / "vgg16_imagenet_notop.weights.h5"
PROJECT_FILES = ("stages", "dvc.yaml", "params.yaml", ".gitignore", ".dvcignore")
TRAINING_STAGES = MODEL_NAMES


def shared_missing() -> str | None:
    """Why the tests marked `real_data` cannot run here, or None when ../shared has the real
    images and weights (conftest.py skips those tests with this reason)."""
    if SHARED_IMAGES.is_dir() and SHARED_WEIGHTS.is_file():
        return None
    return f"real images and weights not found at {SHARED} (they sit beside the project in CI)"


def synthetic_image(label: str, index: int, size: int = 48) -> Image.Image:
    """A class-dependent pattern: cats get horizontal stripes, dogs vertical, with noise,
    random phase and colour, so that a tiny convnet can learn them in an epoch or two."""
    rng = np.random.default_rng(index * 2 + (label == "dog"))
    y, x = np.mgrid[0:size, 0:size]
    period = rng.uniform(4, 8)
    wave = np.sin(2 * np.pi * ((y if label == "cat" else x) / period + rng.uniform()))
    colour = rng.uniform(0.3, 1.0, 3)
    pixels = 127.5 + 100 * wave[..., None] * colour + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def jpeg_bytes(label: str, index: int, size: int = 16) -> bytes:
    """synthetic_image as the bytes of a JPEG file (archive and download payloads)."""
    buf = io.BytesIO()
    synthetic_image(label, index, size).save(buf, format="JPEG")
    return buf.getvalue()


def write_kaggle_folder(folder: Path, per_class: int, size: int = 48) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for label in ("cat", "dog"):
        for i in range(per_class):
            synthetic_image(label, i, size).save(folder / f"{label}.{i}.jpg", quality=92)
    return folder


def tiny_params(source: Path, weights: Path) -> dict:
    """The real params.yaml with a small data set, small images and 1-2 epochs."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["download"] = {"source": str(source), "vgg16_weights": str(weights)}
    params["split"].update(train_per_class=12, val_per_class=6, test_per_class=6, image_size=48)
    params["train"]["precision"] = "float32"
    for stage in TRAINING_STAGES:
        params[stage].update(epochs=2, batch_size=8)
    params["vgg16"]["augment_bank"] = 2
    return params


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the dvc CLI of this interpreter's environment in cwd; fail with its output."""
    exe = Path(sys.executable).with_name("dvc")
    env = {**os.environ, "PYTHONPATH": str(cwd), "DVC_NO_ANALYTICS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def start_queue(project: Path, jobs: int) -> None:
    """`dvc queue start -j jobs`, its output to a file: the daemon it forks would otherwise
    hold our pipes open, and the call would return only when its workers exit."""
    exe = Path(sys.executable).with_name("dvc")
    env = {**os.environ, "PYTHONPATH": str(project), "DVC_NO_ANALYTICS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = project.parent / "queue_start.log"
    with open(log, "w") as out:
        result = subprocess.run([str(exe), "queue", "start", "-j", str(jobs)], cwd=project, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=120)
    assert result.returncode == 0, f"dvc queue start failed:\n{log.read_text()}"


def stop_queue(project: Path, grace: float = 30) -> None:
    """`dvc queue stop`, then end any worker still alive after `grace` seconds: a celery
    worker once hung at its shutdown on a busy 2-core machine, which would outlive the test."""
    dvc(project, "queue", "stop", check=False)
    if os.name != "posix":  # no signal 0 there (os.kill would terminate)
        return
    pids = []
    for pid_file in (project / ".dvc/tmp/exps/celery").glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pids.append(int(pid_file.read_text().strip()))
    deadline = time.monotonic() + grace
    while (pids := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except OSError:
        return False
    return True


def make_project(path: Path, params: dict) -> Path:
    """Copy the project into `path` as a fresh git + DVC repo with `params`, committed."""
    path.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, path / name)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # evaluate's dep on the seed records: the folder with its README, none of this project's records
    (path / seeds_dir()).mkdir(parents=True)
    shutil.copy(ROOT / seeds_dir() / "README.md", path / seeds_dir() / "README.md")
    git(path, "init", "-q")
    git(path, "config", "user.email", "tests@example.com")
    git(path, "config", "user.name", "tests")
    dvc(path, "init", "-q")
    dvc(path, "config", "core.analytics", "false")
    # the plots page: its Vega-Lite template (dvc.yaml names it) and offline HTML template
    shutil.copytree(ROOT / ".dvc" / "plots", path / ".dvc" / "plots")
    dvc(path, "config", "plots.html_template", "plots/page.html")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "project under test")
    return path


def ran_stages(output: str) -> list[str]:
    """Stage names that a dvc repro / exp run actually executed, from its output."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def run_module(module: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m module` in cwd with this project's code on the path, as a stage runs."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", module], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=timeout)


@contextlib.contextmanager
def local_http_server(handler):
    """An HTTP server on 127.0.0.1 (a free port) running `handler` in a thread, its request
    log silenced; yields its base URL and shuts it down after. Tests reach no other address."""
    import threading
    from http.server import ThreadingHTTPServer

    quiet = type(handler.__name__, (handler,), {"log_message": lambda self, *args: None})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), quiet)
    httpd.daemon_threads = True  # a handler the client gave up on never blocks the shutdown
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")  # Debian's package
CHROMEDRIVER = shutil.which("chromedriver")


@contextlib.contextmanager
def headless_chromium(profile: Path, window: str = "1300,1000"):
    """Debian's Chromium, headless, driven by Selenium, its browser console logged; requests
    to any address but this machine go to a closed local port (a proxy that is not there), so
    nothing reaches a CDN even if a page asked. Skips the test where Chromium, its driver or
    Selenium is missing."""
    import pytest

    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Chromium and its driver are not installed (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements.txt)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--proxy-server=127.0.0.1:9", f"--window-size={window}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def run_stage_process(module: str, cwd: Path, env: dict | None = None, **popen) -> subprocess.Popen:
    """A stage run by hand (`python -m stages.<name>` in cwd), its output piped as text, with
    SIGINT as a terminal gives it; `env` adds to this environment."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", module], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=terminal_sigint if os.name == "posix" else None, **popen)


def terminal_sigint() -> None:
    """A subprocess preexec_fn: Ctrl-C's SIGINT acts on the child as in a terminal, even
    where the test runner ignores it (a job started in the background with `&` passes
    SIGINT on ignored, and the child would never see it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
