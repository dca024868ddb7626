"""The real pipeline, end to end: `dvc repro` of all nine stages on a few dozen synthetic
images with a random-init VGG16, in a temporary git repo; then what a user checks.

27 images per class: 12 + 6 + 6 in the three splits, and 3 left over, of which
`split.extended_per_class: 2` puts 2 per class in the extended test set."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import ROOT, TRAINING_STAGES, dvc, git, make_project, ran_stages, tiny_params, write_kaggle_folder
from stages.lib.study import read_history, seeds_dir

pytestmark = pytest.mark.slow  # every test reads one `dvc repro` of the whole pipeline

PER_CLASS = 27
ALL_STAGES = ["download", "split", "train_custom", "train_custom_aug", "extract_features",
              "train_feature_clf", "train_aug_frozen", "finetune", "evaluate"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, random_vgg16_weights):
    root = tmp_path_factory.mktemp("pipeline")
    source = write_kaggle_folder(root / "images", per_class=PER_CLASS)
    params = tiny_params(source, random_vgg16_weights)
    params["split"]["extended_per_class"] = 2
    path = make_project(root / "project", params)
    result = dvc(path, "repro")
    assert sorted(ran_stages(result.stdout)) == sorted(ALL_STAGES), result.stdout
    return path


def read_json(path):
    return json.loads(path.read_text())


def test_download_outputs(project):
    raw = project / "data" / "raw"
    manifest = pd.read_csv(raw / "manifest.csv")
    assert len(manifest) == 2 * PER_CLASS
    assert set(manifest.columns) >= {"file", "label", "id", "sha256", "width", "height", "bytes"}
    assert all((raw / "images" / f).is_file() for f in manifest["file"])
    assert pd.read_csv(raw / "rejected.csv").empty
    assert (project / "data/weights/vgg16_notop.weights.h5").stat().st_size > 50_000_000
    assert read_json(project / "data/raw/summary.json") == {"images": {"cat": 27, "dog": 27}, "rejected": 0, "bytes": int(manifest["bytes"].sum())}


def test_split_is_chollets_id_order(project):
    index = pd.read_csv(project / "data/split/index.csv")
    for label in ("cat", "dog"):
        rows = index[index["label"] == label]
        assert rows.loc[rows["split"] == "train", "id"].tolist() == list(range(12))
        assert rows.loc[rows["split"] == "validation", "id"].tolist() == list(range(12, 18))
        assert rows.loc[rows["split"] == "test", "id"].tolist() == list(range(18, 24))
    assert index["sha256"].is_unique
    for split, n in (("train", 12), ("validation", 6), ("test", 6)):
        for folder in ("cats", "dogs"):
            assert len(list((project / "data/split/images" / split / folder).glob("*.jpg"))) == n
        with np.load(project / f"data/split/arrays/{split}.npz", allow_pickle=False) as arrays:
            assert arrays["images"].shape == (2 * n, 48, 48, 3) and arrays["images"].dtype == np.uint8
            assert arrays["labels"].tolist() == [0] * n + [1] * n
    split_metrics = read_json(project / "metrics/runs/split.json")
    assert split_metrics["train"] == {"cat": 12, "dog": 12} and split_metrics["test"] == {"cat": 6, "dog": 6}
    assert split_metrics["unused_images"] == 6 and split_metrics["extended"] == {"cat": 2, "dog": 2}
    assert read_json(project / "data/split/classes.json") == {"classes": ["cat", "dog"], "positive": "dog"}
    # The extended test set: the next ids after the test split, capped at 2 per class.
    with np.load(project / "data/split/arrays/extended.npz", allow_pickle=False) as arrays:
        assert arrays["files"].tolist() == ["cat.24.jpg", "cat.25.jpg", "dog.24.jpg", "dog.25.jpg"]
        assert arrays["labels"].tolist() == [0, 0, 1, 1]
        assert arrays["images"].shape == (4, 48, 48, 3) and arrays["images"].dtype == np.uint8
        assert arrays["images"].std() > 20
    for figure in ("class_counts.png", "samples.png", "image_sizes.png"):
        assert (project / "plots/data" / figure).stat().st_size > 1000


@pytest.mark.parametrize("stage", TRAINING_STAGES)
def test_training_stage_outputs(project, stage):
    assert (project / f"data/models/{stage}.keras").is_file()
    metrics = read_json(project / f"metrics/{stage}.json")
    assert list(metrics) == ["epochs", "kept_epoch", "val_accuracy"] and metrics["epochs"] == 2
    assert 0.0 <= metrics["val_accuracy"] <= 1.0 and metrics["kept_epoch"] in (1, 2)
    saved = read_json(project / f"plots/{stage}/history.json")  # its history and run record, one file
    assert sorted(saved) == ["history", "run"] and list(project.glob(f"plots/{stage}/*")) == [
        project / f"plots/{stage}/history.json"]
    assert [(r["epoch"], r["split"]) for r in saved["history"]] == [
        (1, "training"), (1, "validation"), (2, "training"), (2, "validation")], "two rows per epoch"
    assert all(sorted(r) == ["accuracy", "epoch", "loss", "split"] for r in saved["history"])
    record = saved["run"]
    assert record["epochs_run"] == 2 and np.isfinite(record["final_val_loss"])
    assert record["best_val_loss_epoch"] in (1, 2) and record["wall_seconds"] > 0 and record["cpu"]
    kept = record.get("restored_epoch", 2)
    assert metrics["kept_epoch"] == kept
    history = read_history(project / f"plots/{stage}/history.json")
    assert [r["epoch"] for r in history] == [1, 2]
    assert metrics["val_accuracy"] == pytest.approx(history[kept - 1]["val_accuracy"], abs=1e-4)
    assert record["final_val_accuracy"] == history[-1]["val_accuracy"]
    assert (project / f"plots/evaluate/curves/{stage}.png").stat().st_size > 1000
    assert not (project / "data/checkpoints" / stage).exists(), "checkpoint removed after success"


def test_features(project):
    with np.load(project / "data/features/train.npz", allow_pickle=False) as f:
        assert f["features"].shape == (24, 1, 1, 512)  # 48 px in, 1x1x512 out of VGG16
        assert f["labels"].tolist() == [0] * 12 + [1] * 12
    record = read_json(project / "plots/extract_features/record.json")  # its run record, kept in git
    passes = {p["pass"]: p for p in record["passes"]}  # the rows of its chart: images/s per pass
    assert passes["features"]["images"] == 24 + 12 + 12 and record["wall_seconds"] > 0 and record["cpu"]
    assert all(p["images_per_second"] > 0 and p["seconds"] >= 0 for p in passes.values())


def test_evaluate(project):
    from stages.lib.metrics import reliability_curve

    results = read_json(project / "metrics/runs/evaluate.json")
    assert list(results) == [*TRAINING_STAGES, "extended"]
    for name in TRAINING_STAGES:
        r = results[name]
        assert r["n"] == 12
        assert r["tp"] + r["fp"] + r["tn"] + r["fn"] == 12
        assert r["accuracy_ci_low"] <= r["accuracy"] <= r["accuracy_ci_high"]
        assert 0 <= r["roc_auc"] <= 1
        predictions = pd.read_csv(project / f"plots/evaluate/predictions/{name}.csv")
        assert len(predictions) == 12 and set(predictions.columns) == {"file", "actual", "predicted", "p_positive"}
        accuracy = (predictions["actual"] == predictions["predicted"]).mean()
        assert accuracy == pytest.approx(r["accuracy"], abs=1e-4)
        # Calibration, from the written predictions: Brier score, and ECE over 15 bins,
        # whose per-bin data is the DVC plot's CSV.
        labels = (predictions["actual"] == "dog").to_numpy(int)
        assert r["brier"] == pytest.approx(np.mean((predictions["p_positive"] - labels) ** 2), abs=1e-4)
        curve = pd.read_csv(project / f"plots/evaluate/reliability/{name}.csv")
        expected = reliability_curve(labels, predictions["p_positive"].to_numpy())
        assert curve["count"].tolist() == expected["count"].tolist() and curve["count"].sum() == 12
        gaps = np.abs(curve["observed_frequency"] - curve["mean_predicted"])
        assert r["ece"] == pytest.approx(np.sum(curve["count"] * gaps) / 12, abs=1e-4)
        assert set(results["extended"][name]) == {"accuracy", "accuracy_ci_low", "accuracy_ci_high", "roc_auc", "n"}
        assert results["extended"][name]["n"] == 4
        extended = pd.read_csv(project / f"plots/evaluate/predictions_extended/{name}.csv")  # for McNemar
        assert len(extended) == 4 and list(extended.columns) == list(predictions.columns)
        assert (extended["actual"] == extended["predicted"]).mean() == pytest.approx(results["extended"][name]["accuracy"])
        assert (project / f"plots/evaluate/gradcam_{name}.png").stat().st_size > 5000
    for figure in ("accuracy.png", "roc.png", "confusion.png", "reliability.png"):
        assert (project / "plots/evaluate" / figure).stat().st_size > 1000
    plots = yaml.safe_load((project / "dvc.yaml").read_text())["plots"]
    reliability = next(p["Reliability on the test split"] for p in plots if "Reliability on the test split" in p)
    assert sorted(reliability["y"]) == sorted(f"plots/evaluate/reliability/{m}.csv" for m in TRAINING_STAGES)


def test_extended_metrics_are_each_models_score_on_the_extended_images(project):
    import keras

    from stages.lib.metrics import binary_metrics

    with np.load(project / "data/split/arrays/extended.npz", allow_pickle=False) as extended:
        images, labels = extended["images"], extended["labels"]
    written = read_json(project / "metrics/runs/evaluate.json")["extended"]
    for name in ("train_custom", "finetune"):
        model = keras.models.load_model(project / f"data/models/{name}.keras", safe_mode=True, compile=False)
        expected = binary_metrics(labels, model.predict(images.astype(np.float32), verbose=0).reshape(-1))
        assert written[name]["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-5), name
        assert written[name]["accuracy_ci_low"] == pytest.approx(expected["accuracy_ci_low"], abs=1e-5), name


def test_exports_are_the_scored_models(project):
    """data/export/<model>/ is a SavedModel whose serving signature gives the probabilities
    `evaluate` wrote (the export itself is tested in a fresh process in test_export.py)."""
    import tensorflow as tf

    assert sorted(p.name for p in (project / "data/export").iterdir()) == sorted(TRAINING_STAGES)
    for name in TRAINING_STAGES:
        assert (project / f"data/export/{name}/saved_model.pb").is_file(), name
    with np.load(project / "data/split/arrays/test.npz", allow_pickle=False) as test:
        images = test["images"]
    for name in ("train_custom", "train_feature_clf"):
        loaded = tf.saved_model.load(str(project / f"data/export/{name}"))
        assert loaded.signatures["classes"]()["classes"].numpy().astype(str).tolist() == ["cat", "dog"]
        answers = loaded.signatures["serving_default"](images=tf.constant(images))
        written = pd.read_csv(project / f"plots/evaluate/predictions/{name}.csv")
        np.testing.assert_allclose(answers["p_positive"].numpy(), written["p_positive"], atol=2e-5, err_msg=name)
        assert answers["label"].numpy().astype(str).tolist() == written["predicted"].tolist(), name
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["evaluate"]
    export = next(o for o in lock["outs"] if o["path"] == "data/export")
    assert export["md5"].endswith(".dir") and export["nfiles"] > 5  # cached by DVC


def test_report(project):
    """plots/report.md: a row per model from metrics/runs/evaluate.json, a diagnosis per run
    computed from its history file, working links, a gallery of errors per model."""
    import re

    from stages.lib.diagnosis import diagnose
    from stages.lib.study import DESCRIPTIONS

    text = (project / "plots/report.md").read_text()
    test_part, extended_part = text.split("## Extended test set (4 images)")
    lines, extended_lines = test_part.splitlines(), extended_part.split("## Training runs")[0].splitlines()
    results = read_json(project / "metrics/runs/evaluate.json")
    for name in TRAINING_STAGES:
        r = results[name]
        row = [line for line in lines if line.startswith("| ") and f"| `{name}` | {r['accuracy']:.3f} (" in line]
        assert len(row) == 1 and row[0].endswith(f"| {r['n']} |"), name
        kept = read_json(project / f"plots/{name}/history.json")["run"].get("restored_epoch")  # restore_best's epoch
        diagnosis = diagnose(read_history(project / f"plots/{name}/history.json"), kept)
        assert diagnosis.epochs == 2
        assert (project / f"plots/evaluate/misclassified_{name}.png").stat().st_size > 1000
        row = [line for line in lines if line.startswith(f"| {DESCRIPTIONS[name]} | `{name}` | ")
               and line.endswith(f"| {r['ece']:.3f} | {r['brier']:.3f} | {r['n']} |")]
        assert len(row) == 1, name
        e = results["extended"][name]
        row = [line for line in extended_lines if f"| `{name}` | {e['accuracy']:.3f} (" in line]
        assert len(row) == 1 and row[0].endswith(f"| {e['n']} |"), name
        assert f"- `{name}`: {diagnosis.line}" in text.splitlines(), name
        assert f"gradcam_{name}.png" in text
    assert "### Phase 1: a small convnet from scratch" in text and "### Phase 2: VGG16 pre-trained on ImageNet" in text
    assert "| `train_aug_frozen` | `finetune` | test split |" in text  # McNemar, on both test sets
    assert "| `train_aug_frozen` | `finetune` | extended test set |" in text
    assert "15 equal-width bins" in text
    for target in re.findall(r"\]\(([^)]+)\)", text):
        assert (project / "plots" / target).is_file(), f"broken link {target}"


def test_dvc_shows_metrics_and_plots(project):
    shown = dvc(project, "metrics", "show", "--json").stdout
    assert "finetune" in shown and "accuracy" in shown
    shown = json.loads(shown)[""]["data"]
    record = read_json(project / "metrics/runs/evaluate.json")
    for name in TRAINING_STAGES:
        test = shown[f"metrics/test/{name}.json"]["data"]
        assert test["accuracy"] == round(record[name]["accuracy"], 3) and test["ece"] >= 0
        assert test["extended_accuracy"] == round(record["extended"][name]["accuracy"], 3)
    result = dvc(project, "plots", "show", "-o", str(project / "plots_html"))
    assert result.stderr.strip() == "", result.stderr  # no plot failed to load
    page = (project / "plots_html" / "index.html").read_text().split("<body>", 1)[1]
    pipeline = yaml.safe_load((project / "dvc.yaml").read_text())
    # the curated list, then every file of the stages' own plots: outputs (dvc.yaml's header)
    declared = [project / next(iter(entry)) for stage in pipeline["stages"].values() for entry in stage.get("plots", [])]
    stage_plot_files = [path for out in declared for path in ([out] if out.is_file() else out.rglob("*"))
                        if path.is_file()]
    assert page.count("vegaEmbed(") + page.count("<img src=") == len(pipeline["plots"]) + len(stage_plot_files)


def test_plots_diff_overlays_an_experiment_on_the_workspace(project):
    """`dvc plots diff <experiment>`: each chart gets the experiment's points beside the
    workspace's, at the same x (the learning curves: the same epochs)."""
    for name, rate in (("plots-a", "0.003"), ("plots-b", "0.0003")):
        dvc(project, "exp", "run", "-n", name, "-S", f"train_feature_clf.learning_rate={rate}")
    shown = json.loads(dvc(project, "plots", "diff", "plots-a", "--json").stdout)
    assert not shown.get("errors"), shown["errors"]
    loss_chart = "plots/train_feature_clf/history.json"  # the stage's plots: output, drawn as its loss
    for chart in (loss_chart, "train_feature_clf: accuracy", "ROC on the test split", "plots/evaluate/accuracy.csv",
                  "plots/extract_features/record.json"):
        (plot,) = shown["data"][chart]
        assert sorted(plot["revisions"]) == ["plots-a", "workspace"], chart
        values = plot["content"]["data"]["values"]
        assert {v["rev"] for v in values} == {"plots-a", "workspace"}, chart
    (plot,) = shown["data"][loss_chart]
    assert plot["content"]["title"]["text"] == "train_feature_clf: loss"
    loss = {(v["rev"], v["split"], int(v["epoch"])): float(v["loss"]) for v in plot["content"]["data"]["values"]}
    assert sorted(loss) == sorted((rev, split, epoch) for rev in ("plots-a", "workspace")
                                  for split in ("training", "validation") for epoch in (1, 2))
    assert any(loss["plots-a", "training", epoch] != loss["workspace", "training", epoch] for epoch in (1, 2))
    # and nothing generic: the curated charts, the stages' declared charts and the figures
    shown = json.loads(dvc(project, "plots", "show", "--json").stdout)
    assert not shown.get("errors") and len(shown["data"]) == 13 + 10 + 5 + 1 + 3, sorted(shown["data"])


def test_noop_repro_runs_nothing(project):
    result = dvc(project, "repro")
    assert ran_stages(result.stdout) == [], result.stdout


def test_param_change_reruns_only_dependents(project):
    before = read_json(project / "metrics/train_feature_clf.json")
    result = dvc(project, "exp", "run", "-S", "train_feature_clf.learning_rate=0.001")
    assert sorted(ran_stages(result.stdout)) == ["evaluate", "train_feature_clf"], result.stdout
    assert yaml.safe_load((project / "params.yaml").read_text())["train_feature_clf"]["learning_rate"] == 0.001
    assert read_json(project / "metrics/train_feature_clf.json") != before
    diff = dvc(project, "metrics", "diff", "--json").stdout
    assert "metrics/train_feature_clf.json" in json.loads(diff)


def test_editing_a_figure_reruns_evaluate_only(project):
    """Figures are drawn by `evaluate` alone: a change to the learning-curve function must
    not retrain anything (it used to rerun `split` and all five training stages)."""
    report = project / "stages/figures/report.py"
    original = report.read_text()
    edited = original.replace('ax.set_xlabel("epoch")', 'ax.set_xlabel("epoch (1-based)")')
    assert edited != original, "the learning-curve function no longer labels its x axis 'epoch'"
    report.write_text(edited)
    try:
        status = dvc(project, "status", "--json").stdout
        assert sorted(json.loads(status)) == ["evaluate"], status
        result = dvc(project, "repro")
        assert ran_stages(result.stdout) == ["evaluate"], result.stdout
    finally:
        report.write_text(original)
        dvc(project, "repro")


# Runs in a fresh interpreter, outside the project, where `stages` cannot be imported: what
# a user who took a model away has, Keras and the .keras file.
LOAD_AND_SCORE = """
import json, sys
import keras
import numpy as np
try:
    import stages
    sys.exit("the project's code is importable here: the test would prove nothing")
except ImportError:
    pass
models, test, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
with np.load(test, allow_pickle=False) as arrays:
    images = arrays["images"]
probs = {}
for name, path in models.items():
    model = keras.models.load_model(path)
    assert model.input_shape == (None, *images.shape[1:]), (name, model.input_shape)
    probs[name] = model.predict(images.astype(np.float32), verbose=0).reshape(-1).tolist()
json.dump(probs, open(out, "w"))
"""


def test_every_registered_model_loads_with_plain_keras_in_a_fresh_process(project, tmp_path):
    """Each model of dvc.yaml's `artifacts:` (what `dvc artifacts get` hands out) loads with
    plain keras.models.load_model, without this project's code, takes raw pixels (the VGG16
    preprocessing is inside, made of Keras layers; train_feature_clf keeps its conv base)
    and gives the probabilities `evaluate` wrote for the test images."""
    artifacts = yaml.safe_load((project / "dvc.yaml").read_text())["artifacts"]
    assert sorted(artifacts) == sorted(TRAINING_STAGES)
    paths = {name: str(project / artifact["path"]) for name, artifact in artifacts.items()}
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run([sys.executable, "-c", LOAD_AND_SCORE, json.dumps(paths),
                          str(project / "data/split/arrays/test.npz"), str(outside / "probs.json")],
                         cwd=outside, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    probs = read_json(outside / "probs.json")
    with np.load(project / "data/split/arrays/test.npz", allow_pickle=False) as test:
        files = test["files"]
    for name in TRAINING_STAGES:
        written = pd.read_csv(project / f"plots/evaluate/predictions/{name}.csv")
        assert written["file"].tolist() == files.tolist()
        [p_column] = [c for c in written.columns if c.startswith("p_")]  # the written probability
        np.testing.assert_allclose(probs[name], written[p_column], atol=1e-5, rtol=0, err_msg=name)


def commit_snapshot(project, message: str) -> str:
    """Commit the workspace as `git add -A; git commit` would (dvc.lock, metrics), but with
    a temporary index and no branch moved: HEAD and the workspace stay as the other tests
    expect them. Returns the commit's hash."""
    env = {**os.environ, "GIT_INDEX_FILE": str(project / ".git" / "snapshot-index")}

    def run(*args):
        return subprocess.run(["git", *args], cwd=project, env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    run("read-tree", "HEAD")
    run("add", "-A")
    tree = run("write-tree")
    return run("commit-tree", tree, "-p", "HEAD", "-m", message)


def test_dvc_artifacts_get_retrieves_a_model(project, tmp_path):
    """The `artifacts:` of dvc.yaml, end to end: commit the run, register a version of an
    artifact (a Git tag in GTO's format, which `gto register finetune` writes; `dvc artifacts
    get` finds versions by these tags), then fetch it from the repository path. The model
    comes from the project's local DVC cache: no remote needed for a local repository."""
    snapshot = commit_snapshot(project, "the tiny study, run")
    git(project, "tag", "-a", "finetune@v0.1.0", "-m", "registering finetune", snapshot)
    out = tmp_path / "finetune.keras"
    result = dvc(tmp_path, "artifacts", "get", str(project), "finetune", "-o", str(out))
    assert out.read_bytes() == (project / "data/models/finetune.keras").read_bytes(), result.stdout
    missing = dvc(tmp_path, "artifacts", "get", str(project), "no_such_model", check=False)
    assert missing.returncode != 0


def test_a_wiped_workspace_comes_back_without_retraining(project):
    """Completed stages come back from DVC's cache. A clone of a committed run has the
    git-kept metrics/ and plots/: `dvc checkout` brings back the DVC-cached data and models,
    and `dvc repro` trains nothing. With metrics/ and plots/ gone too (a later session, a
    run nobody committed), the run-cache restores every stage but `split` and `evaluate`, whose
    git-kept records are `outs:` entries and so are never in the run-cache (dvc.yaml says why;
    test_dvc_run_cache.py): they alone rerun, in seconds here, in minutes on the real data;
    `download` comes back, so nothing is downloaded again."""
    import shutil

    before = {p.relative_to(project).as_posix(): p.read_bytes() for p in (project / "metrics").glob("*.json")}
    shutil.rmtree(project / "data")
    dvc(project, "checkout")
    result = dvc(project, "repro")
    assert ran_stages(result.stdout) == [], result.stdout
    assert dvc(project, "status").stdout.strip().endswith("up to date.")

    # Everything gone: the run-cache brings back all but split and evaluate, which rerun; once
    # `dvc commit -f` has recorded the run, they come back too.
    for commit_first, reran in ((False, ["split", "evaluate"]), (True, [])):
        if commit_first:
            dvc(project, "commit", "-f")
        for name in ("data", "metrics", "plots"):
            shutil.rmtree(project / name)
        git(project, "checkout", "--", seeds_dir().as_posix())  # git-kept and no stage's output: a clone has it
        result = dvc(project, "repro")
        assert ran_stages(result.stdout) == reran, result.stdout
        assert "Stage 'train_custom' is cached - skipping run, checking out outputs" in result.stdout, result.stdout
        after = {p.relative_to(project).as_posix(): p.read_bytes() for p in (project / "metrics").glob("*.json")}
        assert after == before
        assert (project / "data/models/finetune.keras").is_file() and (project / "plots/report.md").is_file()
        assert (project / "plots/train_custom/history.json").is_file()
        assert dvc(project, "status").stdout.strip().endswith("up to date.")


# What a training stage and evaluate give `dvc metrics show`: a few numbers each; the rest is
# in their run records (stages/lib/study.py).
TRAINING_METRICS = {"epochs", "kept_epoch", "val_accuracy"}
TEST_METRICS = {"accuracy", "ci_low", "ci_high", "roc_auc", "log_loss", "ece", "extended_accuracy"}


def test_dvc_metrics_show_fits_a_screen(project):
    """`dvc metrics show` of the training and test metrics fits in 160 columns with each
    model's test accuracy in it, and no metrics file holds provenance (time, machine)."""
    models = [f"metrics/{name}.json" for name in TRAINING_STAGES] + ["metrics/test"]
    shown = dvc(project, "metrics", "show", *models).stdout
    assert max(len(line) for line in shown.splitlines()) <= 160, shown
    record = read_json(project / "metrics/runs/evaluate.json")
    for name in TRAINING_STAGES:
        (row,) = [line.split() for line in shown.splitlines() if line.startswith(f"metrics/test/{name}.json ")]
        assert str(round(record[name]["accuracy"], 3)) == row[1], shown  # the first column: accuracy
    everything = json.loads(dvc(project, "metrics", "show", "--json").stdout)[""]["data"]
    for path in (f"metrics/{name}.json" for name in TRAINING_STAGES):
        assert set(everything[path]["data"]) == TRAINING_METRICS, path
    for path in (f"metrics/test/{name}.json" for name in TRAINING_STAGES):
        assert set(everything[path]["data"]) == TEST_METRICS, path


def test_metrics_diff_of_an_experiment_is_its_model_alone(project):
    """After an experiment on one model, `dvc metrics diff` lists that stage's metrics and
    its test numbers: no provenance, nothing of the other models (evaluate scores them
    again, to the same numbers)."""
    git(project, "add", "-A")  # the finished study, committed: what `dvc metrics diff` compares with
    git(project, "commit", "-q", "-m", "the study")
    dvc(project, "exp", "run", "-S", "train_custom.dropout=0.3")
    diff = json.loads(dvc(project, "metrics", "diff", "--json").stdout)
    assert set(diff) <= {"metrics/train_custom.json", "metrics/test/train_custom.json"}, diff
    assert "metrics/test/train_custom.json" in diff, diff
    assert set(diff.get("metrics/train_custom.json", {})) <= TRAINING_METRICS, diff
    assert set(diff["metrics/test/train_custom.json"]) <= TEST_METRICS, diff


def readme_command(start: str) -> list[str]:
    """The README's command line that starts with `start`, as arguments."""
    import shlex

    (line,) = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(start)]
    return shlex.split(line.split("  #")[0])


def test_exp_show_fits_a_screen(project, monkeypatch):
    """The README's `dvc exp show` on 200 columns, with two experiments: the param they
    changed and the test accuracies, nothing DVC had to cut (`…`), no hashes or times. The
    tiny study's models all score 0.5, so train_custom's test accuracy is kept explicitly
    (with real data the experiment changes it and --only-changed shows it)."""
    monkeypatch.setenv("COLUMNS", "200")
    for name, dropout in (("show-a", "0.1"), ("show-b", "0.2")):
        dvc(project, "exp", "run", "-n", name, "-S", f"train_custom.dropout={dropout}")
    command = readme_command("dvc exp show")
    shown = dvc(project, *command[1:], "--no-pager", "--keep", "metrics/test/train_custom.json:accuracy").stdout
    assert max(len(line) for line in shown.splitlines()) <= 200 and "…" not in shown, shown
    header = shown.splitlines()[1].split()
    assert header == ["Experiment", "metrics/test/train_custom.json:accuracy", "train_custom.dropout"], shown
    rows = {line.split()[-3].strip("[]"): line.split()[-2:] for line in shown.splitlines() if "[show-" in line}
    record = read_json(project / "metrics/runs/evaluate.json")  # the workspace: show-b, the last one run
    assert rows["show-a"][1] == "0.1" and rows["show-b"] == [str(round(record["train_custom"]["accuracy"], 3)), "0.2"], shown


def test_a_finished_run_kept_as_a_record(project, tmp_path):
    """`python -m stages.tools.record_run` keeps the run's params, classes, metrics, report and
    figures, and writes a README whose numbers are the run's; readme_table's own-data block
    reads the same record; a file an older run left in metrics/ is not kept; a command whose
    -S disagrees with the run's params.yaml, and an unfinished project, are one line, exit 2,
    and no record."""
    from stages.lib.study import MODEL_NAMES
    from stages.tools import readme_table, record_run

    (project / "metrics" / "split.json").write_text("{}")  # where an older split wrote its counts
    dest = tmp_path / "records" / "tiny"
    image_size = yaml.safe_load((project / "params.yaml").read_text())["split"]["image_size"]
    command = f"dvc exp run -S split.image_size={image_size}"
    try:
        assert record_run.main([str(project), str(dest), "--command", command, "--reference", "none, a test."]) == 0
    finally:
        (project / "metrics" / "split.json").unlink()  # the fixture's project is shared with later tests
    for kept in ("params.yaml", "data/split/classes.json", "metrics/runs/evaluate.json", "metrics/test/finetune.json",
                 "metrics/runs/split.json", "metrics/train_custom.json", "plots/report.md", "plots/evaluate/accuracy.png",
                 "plots/train_custom/history.json"):
        assert (dest / kept).is_file(), kept
    assert not (dest / "metrics" / "split.json").exists()
    text = (dest / "README.md").read_text()
    assert text.startswith("# cat vs. dog: the study on other data\n") and f"```\n{command}\n```" in text
    for name in MODEL_NAMES:
        scores = read_json(project / f"metrics/test/{name}.json")
        kept = read_json(project / f"metrics/{name}.json")
        assert (f"| `{name}` | {scores['accuracy']:.3f} ({scores['ci_low']:.3f}-{scores['ci_high']:.3f}) | "
                f"{read_json(project / 'metrics/runs/evaluate.json')[name]['balanced_accuracy']:.3f} | "
                f"{kept['kept_epoch']} ({kept['epochs']}) | {kept['val_accuracy']:.3f} |") in text, name
    assert "Published, for comparison (quoted, not measured here): none, a test." in text
    block = readme_table.own_data_table(dest)
    assert block.splitlines()[:2] == record_run.results_table(record_run.summary(dest))[:2]
    assert "none, a test." in block

    wrong = subprocess.run([sys.executable, "-m", "stages.tools.record_run", str(project), str(tmp_path / "wrong"),
                            "--command", f"dvc exp run -S split.image_size={image_size + 1}"],
                           capture_output=True, text=True, cwd=ROOT)
    assert wrong.returncode == 2 and len(wrong.stderr.splitlines()) == 1, wrong.stderr
    assert f"split.image_size={image_size + 1}" in wrong.stderr and "params.yaml" in wrong.stderr
    assert not (tmp_path / "wrong").exists()

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    run = subprocess.run([sys.executable, "-m", "stages.tools.record_run", str(unfinished), str(tmp_path / "no"),
                          "--command", "x"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2 and run.stderr.startswith("error: ") and len(run.stderr.splitlines()) == 1, run.stderr
    assert not (tmp_path / "no").exists()
