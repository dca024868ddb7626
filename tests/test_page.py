"""The browser page (`python -m stages.tools.page`) driven as a user drives it: a project
folder with five tiny convnets made here, the page started on a free port, then headless
Chromium (Debian's `chromium` and `chromium-driver`, as .ci/run installs them; Selenium
from requirements.txt) uploads a real photo from ../shared and reads the five P(dog) that
the page shows, which must be `python -m stages.tools.predict`'s on the same file; bad files
get their message in the page and nothing in the terminal; the study view shows the
metrics and figures of the project's metrics/ and plots/; the browser asks nothing of any
address but the page's. Skipped, with the reason, where Chromium or ../shared is missing."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from keras import layers
from PIL import Image

from helpers import ROOT, SHARED_IMAGES, headless_chromium, shared_missing, synthetic_image, terminal_sigint

from stages.lib.study import MODEL_NAMES, SUMMARY_FIGURES, classes_record, model_figure, model_scores_file

pytestmark = [pytest.mark.slow, pytest.mark.network]

SIZE = 48
MAX_UPLOAD_MB = 1  # small limits, so that the test's bad files cross them cheaply
MAX_PIXELS = 1_000_000
WAIT_SECONDS = 60
REAL_PHOTO = SHARED_IMAGES / "dog.7.jpg"


def tiny_convnet(seed: int) -> keras.Model:
    """A convnet as the study's models are: raw pixels in, one conv layer (for Grad-CAM),
    P(dog) out; random weights, a different answer per seed."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.Conv2D(4, 3, activation="relu")(layers.Rescaling(1 / 255)(inputs))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(1, activation="sigmoid", name="p_positive")(x))


def figure_png(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (120, 80), colour).save(path)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project folder as `dvc repro` leaves it: params.yaml, the class names, five models,
    the test split's images, evaluate's metrics (with a made-up accuracy per model) and
    the report's figures (plain colour PNGs)."""
    root = tmp_path_factory.mktemp("project")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["split"]["image_size"] = SIZE
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "data" / "split").mkdir(parents=True)
    (root / "data" / "split" / "classes.json").write_text(json.dumps(classes_record(("cat", "dog"))))
    (root / "data" / "models").mkdir()
    for seed, name in enumerate(MODEL_NAMES):
        tiny_convnet(seed).save(root / "data" / "models" / f"{name}.keras")
    for label in ("cat", "dog"):
        folder = root / "data" / "split" / "images" / "test" / f"{label}s"
        folder.mkdir(parents=True)
        for i in range(3):
            synthetic_image(label, i).save(folder / f"{label}.{1500 + i}.jpg")
    (root / "metrics" / "test").mkdir(parents=True)
    for i, name in enumerate(MODEL_NAMES):  # what evaluate writes as DVC metrics
        scores = {"accuracy": 0.7 + 0.05 * i, "ci_low": 0.65 + 0.05 * i, "ci_high": 0.75 + 0.05 * i,
                  "roc_auc": 0.8 + 0.03 * i, "log_loss": 0.5 - 0.05 * i, "ece": 0.1 - 0.015 * i,
                  "extended_accuracy": 0.71 + 0.05 * i}
        model_scores_file(name, root / "metrics").write_text(json.dumps(scores))
    evaluate = root / "plots" / "evaluate"
    for i, name in enumerate(MODEL_NAMES):
        for kind in ("curves", "gradcam", "misclassified"):
            figure_png(evaluate / model_figure(kind, name), (40 * i, 100, 200))
    for file in SUMMARY_FIGURES.values():
        figure_png(evaluate / file, (200, 120, 40))
    return root


def page_process(cwd: Path, log: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "stages.tools.page", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True,
                            preexec_fn=terminal_sigint if os.name == "posix" else None)


@pytest.fixture(scope="module")
def page(project, tmp_path_factory):
    """(the page's address, what it wrote to the terminal (stderr) since it started
    serving: a function), served from `project` on a free port. TensorFlow's start-up
    chatter comes before."""
    log = tmp_path_factory.mktemp("page") / "stderr.txt"
    process = page_process(project, log, "--port", "0", "--max-upload-mb", str(MAX_UPLOAD_MB),
                           "--max-pixels", str(MAX_PIXELS))
    try:
        first = process.stdout.readline()  # the address, once the models are loaded
        found = re.match(r"page: (http://127\.0\.0\.1:\d+/) \(5 models loaded in [\d.]+ s\)", first)
        assert found, f"{first!r}\n{log.read_text()}"
        start = log.stat().st_size
        yield found.group(1), lambda: log.read_bytes()[start:].decode()
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium whose requests to any address but this machine go to a closed
    port (a proxy that is not there), so nothing could reach a CDN even if the page asked."""
    with headless_chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def wait_for(driver, script: str, what: str):
    """Poll a JavaScript expression until it is truthy; its value."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not (value := driver.execute_script(f"return {script}")):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait_for(driver, "document.body.dataset.ready === 'true'", "the page to start")


def upload(driver, *files: Path) -> list:
    """Choose files in the page's file input; the result cards, newest first, once done."""
    before = driver.execute_script("return document.querySelectorAll('.card').length")
    driver.find_element("id", "files").send_keys("\n".join(str(f) for f in files))
    wanted = before + len(files)
    wait_for(driver, f"document.querySelectorAll('.card[data-done]').length >= {wanted}", f"{len(files)} result(s)")
    return driver.find_elements("css selector", ".card")[:len(files)]


def shown_results(card) -> dict[str, dict]:
    rows = card.find_elements("css selector", "tr.model-result")
    return {row.get_attribute("data-model"): {"p": float(row.get_attribute("data-p")),
                                              "cells": [td.text for td in row.find_elements("tag name", "td")]}
            for row in rows}


def predict_tool(project: Path, file: Path, model: str, monkeypatch, capsys) -> dict:
    """`python -m stages.tools.predict FILE --model MODEL --json`, run in this process (its
    main(), from the project folder): TensorFlow is loaded once for the five runs."""
    from stages.tools import predict

    capsys.readouterr()
    with monkeypatch.context() as m:
        m.chdir(project)
        assert predict.main([str(file), "--model", model, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_real_photo_gets_what_predict_says(page, browser, project, tmp_path, monkeypatch, capsys):
    if shared_missing() or not REAL_PHOTO.is_file():
        pytest.skip(shared_missing() or f"{REAL_PHOTO} not found")
    url, terminal = page
    open_page(browser, url)
    assert browser.find_element("id", "title").text == "cat or dog? Five models on your photo"
    (card,) = upload(browser, REAL_PHOTO)
    assert card.find_elements("css selector", ".error") == []
    shown = shown_results(card)
    assert list(shown) == list(MODEL_NAMES)
    headers = [th.text for th in card.find_elements("css selector", "th")]
    assert headers[:2] == ["model", "P(dog)"]
    metrics = {name: json.loads(model_scores_file(name, project / "metrics").read_text()) for name in MODEL_NAMES}
    for name, result in shown.items():
        expected = predict_tool(project, REAL_PHOTO, name, monkeypatch, capsys)
        assert abs(result["p"] - expected["p_positive"]) <= 1e-6, (name, result["p"], expected)
        _, p_cell, _, label_cell, accuracy_cell, ece_cell, _ = result["cells"]
        assert float(p_cell) == pytest.approx(expected["p_positive"], abs=1e-4)
        assert label_cell == expected["label"]
        assert (float(accuracy_cell), float(ece_cell)) == pytest.approx(
            (metrics[name]["accuracy"], metrics[name]["ece"]), abs=1e-3)
    # Every Grad-CAM overlay and the model's-eye view are real images of the model's size.
    sizes = wait_for(browser, "(() => { const i = [...document.querySelectorAll('.card img')];"
                              " return i.every(x => x.complete) && i.map(x => x.naturalWidth); })()", "the images")
    assert sizes == [SIZE] * 6
    browser.save_screenshot(str(tmp_path / "photo.png"))
    assert terminal() == ""


def test_bad_files_get_a_message_in_the_page(page, browser, tmp_path):
    url, terminal = page
    open_page(browser, url)
    text = tmp_path / "notes.jpg"
    text.write_text("a text file named like a photo")
    heavy = tmp_path / "noise.png"  # 700x700 of noise: 1.5 MB, over the 1 MB limit
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (700, 700, 3), np.uint8)).save(heavy)
    wide = tmp_path / "wide.png"  # 1.2 Mpx of one colour: a few KB, over the pixel limit
    Image.new("RGB", (1200, 1000), (90, 140, 200)).save(wide)
    cards = upload(browser, text, heavy, wide)
    errors = {card.find_element("tag name", "h2").text: card.find_element("css selector", ".error").text
              for card in cards}
    assert errors == {"notes.jpg": "not an image (Pillow cannot identify it)",
                      "noise.png": f"file too large: {heavy.stat().st_size / 1e6:.1f} MB (limit 1.0 MB)",
                      "wide.png": "too many pixels: 1200x1000 = 1.2 Mpx (limit 1.0 Mpx)"}
    # A file dropped on the page (anywhere) is classified like a chosen one.
    browser.execute_script("""
        const files = new DataTransfer();
        files.items.add(new File(['dropped text'], 'dropped.jpg', {type: 'image/jpeg'}));
        document.body.dispatchEvent(new DragEvent('drop', {dataTransfer: files, bubbles: true, cancelable: true}));""")
    wait_for(browser, "document.querySelectorAll('.card[data-done]').length === 4", "the dropped file's result")
    dropped = browser.find_element("css selector", ".card")
    assert (dropped.find_element("tag name", "h2").text, dropped.find_element("css selector", ".error").text) == (
        "dropped.jpg", "not an image (Pillow cannot identify it)")
    browser.save_screenshot(str(tmp_path / "errors.png"))
    # The server refuses the oversized file itself too, whatever a client checks first.
    request = urllib.request.Request(f"{url}api/classify?name=noise.png", data=heavy.read_bytes(), method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["error"].startswith("file too large: 1.5 MB")
    # ... and a page that was never listed is not served from the project folder.
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{url}plots/../params.yaml", timeout=30)
    assert missing.value.code == 404
    assert terminal() == ""  # nothing in the terminal: no traceback, no request log


def test_a_test_split_image_and_the_study(page, browser, project, tmp_path):
    url, _ = page
    open_page(browser, url)
    options = [o.get_attribute("value") for o in browser.find_elements("css selector", "#test-image option")]
    assert options == [f"cats/cat.{1500 + i}.jpg" for i in range(3)] + [f"dogs/dog.{1500 + i}.jpg" for i in range(3)]
    browser.find_element("css selector", "#test-image option[value='dogs/dog.1501.jpg']").click()
    browser.find_element("id", "classify-test").click()
    wait_for(browser, "document.querySelector('.card[data-done]')", "the test image's result")
    card = browser.find_element("css selector", ".card")
    assert card.find_element("tag name", "h2").text == "test split: dogs/dog.1501.jpg"
    assert list(shown_results(card)) == list(MODEL_NAMES)

    browser.find_element("id", "tab-study").click()
    figures = sorted(p.relative_to(project).as_posix() for p in (project / "plots" / "evaluate").rglob("*.png"))
    loaded = wait_for(browser, f"(() => {{ const i = [...document.querySelectorAll('#figures img')];"
                               f" return i.length === {len(figures)} && i.every(x => x.complete && x.naturalWidth)"
                               " && i.map(x => x.getAttribute('src')); })()", "the study's figures")
    assert sorted(src.lstrip("/") for src in loaded) == figures
    metrics = {name: json.loads(model_scores_file(name, project / "metrics").read_text()) for name in MODEL_NAMES}
    rows = browser.find_elements("css selector", "tr.study-row")
    assert [row.get_attribute("data-model") for row in rows] == list(MODEL_NAMES)
    for row, name in zip(rows, MODEL_NAMES):
        m = metrics[name]
        cells = [td.text for td in row.find_elements("tag name", "td")]
        assert cells[2] == f"{m['accuracy']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
        assert cells[3:] == [f"{m['roc_auc']:.3f}", f"{m['log_loss']:.3f}", f"{m['ece']:.3f}",
                             f"{m['extended_accuracy']:.3f}"]
    browser.save_screenshot(str(tmp_path / "study.png"))
    # Everything the browser loaded came from the page's own server; nothing failed.
    requested = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert requested and all(r.startswith(url) for r in requested), requested
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


@pytest.mark.skipif(os.name != "posix", reason="SIGINT is sent to a process this way on POSIX only")
def test_ctrl_c_stops_it_in_one_line(project, tmp_path):
    log = tmp_path / "stderr.txt"
    process = page_process(project, log, "--port", "0")
    assert process.stdout.readline().startswith("page: http://127.0.0.1:")
    start = log.stat().st_size
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    assert log.read_bytes()[start:].decode() == "page: stopped\n"


def test_without_models_or_with_a_taken_port_one_line(project, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    empty = tmp_path / "fresh_clone"
    shutil.copytree(project, empty, ignore=shutil.ignore_patterns("models"))
    run = subprocess.run([sys.executable, "-m", "stages.tools.page", "--port", "0"], cwd=empty, env=env,
                         capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stderr) == (2, "error: data/models/finetune.keras not found (nor any other trained "
                                               "model): run `dvc repro` or `dvc pull`\n")
    run = subprocess.run([sys.executable, "-m", "stages.tools.page", "--max-pixels", "0"], cwd=empty, env=env,
                         capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stderr) == (2, "error: --max-pixels 0: must be 1-50000000 (the pipeline's limit)\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "stages.tools.page", "--port", str(port)], cwd=project, env=env,
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert re.fullmatch(rf"error: --host 127.0.0.1 --port {port}: cannot listen there \([^)]+\); choose another "
                        r"--port, or --port 0 for a free one\n", run.stderr), run.stderr


def test_the_benchmark_times_the_page(project, tmp_path):
    """benchmarks/page_benchmark.py runs and writes what it promises (a smoke test, not a
    measurement: one upload to tiny models)."""
    image = project / "data" / "split" / "images" / "test" / "dogs" / "dog.1500.jpg"
    out = tmp_path / "page.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run([sys.executable, "-m", "benchmarks.page_benchmark", "--project", str(project),
                          "--image", str(image), "--rounds", "1", "--out", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert report["machine"]["cpu_kind"] and report["machine"]["cpus_usable"] > 0
    assert report["models"] == 5 and report["startup_s"] > 0
    (one,) = report["rounds"]
    assert 0 < one["first_result_s"] <= one["all_gradcam_s"]
    assert report["first_result_s"] == {"median": one["first_result_s"], "max": one["first_result_s"]}
    assert set(one["p"]) == set(MODEL_NAMES) and all(0 <= p <= 1 for p in one["p"].values())
    assert f"{out}: start-up " in run.stdout


def test_the_class_names_come_from_the_data(project, browser, tmp_path):
    """An ants-vs-bees study: the page says P(bee) and labels ant or bee."""
    bees = tmp_path / "bees"
    shutil.copytree(project, bees)
    (bees / "data" / "split" / "classes.json").write_text(json.dumps(classes_record(("ant", "bee"))))
    process = page_process(bees, tmp_path / "stderr.txt", "--port", "0")
    try:
        url = re.match(r"page: (http://\S+/) ", process.stdout.readline()).group(1)
        open_page(browser, url)
        assert browser.find_element("id", "title").text == "ant or bee? Five models on your photo"
        (card,) = upload(browser, bees / "data" / "split" / "images" / "test" / "cats" / "cat.1500.jpg")
        assert [th.text for th in card.find_elements("css selector", "th")][1] == "P(bee)"
        labels = {result["cells"][3] for result in shown_results(card).values()}
        assert labels and labels <= {"ant", "bee"}
    finally:
        process.terminate()
        process.wait(30)
