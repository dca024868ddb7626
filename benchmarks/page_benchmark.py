"""How fast the browser page answers (`python -m stages.tools.page`): its start-up time and
the time from an upload to the first result for all trained models, on this machine.

    python -m benchmarks.page_benchmark [--project DIR] [--image FILE] [--rounds 5] [--out FILE]

It starts the page in DIR (default: here; it needs the trained models, params.yaml and
data/split/classes.json) on a free port, as a user would, and times from outside, over
HTTP, what the browser waits for:

- start-up: from launching the process to the page answering /api/info (Python and
  TensorFlow imports, loading the models, one warm-up pass each);
- first result: POST of the image to its answer, the probability and label of every
  model (what the page shows first); the goal is 2 s for five models on 2 cores;
- all Grad-CAM overlays: the first result plus the overlays of every model, one after
  another as the server computes them.

Each round uploads the same file (default: ../shared's dog.7.jpg, else the first image of
the test split). The JSON records the CPU (stages/lib/runtime.py machine()), the load
averages and the per-round times; default file
benchmarks/results/<cpu kind>-<date>-page.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_PHOTO = ROOT.parent / "shared" / "datasets" / "dogs-vs-cats" / "train" / "dog.7.jpg"
GOAL_SECONDS = 2.0  # first result after upload, five models, 2-core CPU
START_TIMEOUT = 600


def default_image(project: Path) -> Path:
    if SHARED_PHOTO.is_file():
        return SHARED_PHOTO
    tests = sorted((project / "data" / "split" / "images" / "test").rglob("*.jpg"))
    if not tests:
        sys.exit(f"no image to upload: {SHARED_PHOTO} and {project}/data/split/images/test/ hold none; use --image")
    return tests[0]


def get(url: str, data: bytes | None = None) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST" if data else "GET"),
                                timeout=120) as response:
        return response.read()


def start_page(project: Path) -> tuple[subprocess.Popen, str, float]:
    """(the page's process, its address, seconds from launch to its first answer)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "stages.tools.page", "--port", "0"], cwd=project, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    found = re.match(r"page: (http://\S+/) ", line)
    if not found:
        process.kill()
        sys.exit(f"the page did not start in {project}: {line.strip() or 'no output'} "
                 f"(run `python -m stages.tools.page` there to see why)")
    get(found.group(1) + "api/info")
    return process, found.group(1), time.perf_counter() - started


def one_round(url: str, image: Path) -> dict:
    data = image.read_bytes()
    started = time.perf_counter()
    answer = json.loads(get(f"{url}api/classify?name={urllib.parse.quote(image.name)}", data))
    first = time.perf_counter() - started
    if answer["error"]:
        sys.exit(f"{image}: the page refused it: {answer['error']}")
    for result in answer["results"]:
        get(f"{url}api/gradcam?token={answer['token']}&model={result['model']}")
    return {"first_result_s": round(first, 3), "all_gradcam_s": round(time.perf_counter() - started, 3),
            "models": len(answer["results"]), "p": {r["model"]: round(r["p"], 6) for r in answer["results"]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."),
                        help="project folder with trained models (default: here)")
    parser.add_argument("--image", type=Path,
                        help="the file to upload (default: ../shared's dog.7.jpg or a test image)")
    parser.add_argument("--rounds", type=int, default=5, help="uploads timed (default 5)")
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/<cpu kind>-<date>-page.json)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from stages.lib.runtime import machine

    project = args.project.resolve()
    image = (args.image or default_image(project)).resolve()
    load_at_start = os.getloadavg()
    process, url, startup = start_page(project)
    try:
        rounds = [one_round(url, image) for _ in range(args.rounds)]
    finally:
        process.terminate()
        process.wait(30)
    first = [r["first_result_s"] for r in rounds]
    report = {
        "what": "python -m stages.tools.page: start-up and time to first result after upload",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine(), "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else os.cpu_count()},
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "image": image.name, "image_bytes": image.stat().st_size, "models": rounds[0]["models"] if rounds else 0,
        "startup_s": round(startup, 2),
        "first_result_s": {"median": round(statistics.median(first), 3), "max": max(first)} if rounds else None,
        "all_gradcam_s_median": round(statistics.median(r["all_gradcam_s"] for r in rounds), 3) if rounds else None,
        "goal": f"first result within {GOAL_SECONDS:g} s",
        "goal_met": bool(rounds) and max(first) <= GOAL_SECONDS,
        "rounds": rounds,
    }
    out = args.out or ROOT / "benchmarks" / "results" / (
        f"{report['machine']['cpu_kind'].replace('_', '')}-{report['date'][:10]}-page.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{out}: start-up {report['startup_s']} s; first result median {report['first_result_s']['median']} s, "
          f"max {report['first_result_s']['max']} s for {report['models']} models (goal {GOAL_SECONDS:g} s: "
          f"{'met' if report['goal_met'] else 'not met'}); all Grad-CAM overlays {report['all_gradcam_s_median']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
