"""`train.distribute`: the stages' own training under tf.distribute on this CPU-only machine.

MirroredStrategy runs over two logical CPU devices, made by a tiny driver before TensorFlow
initialises (the library has no test hook); MultiWorkerMirroredStrategy runs as two worker
processes on 127.0.0.1, each in its own copy of the project (as on two machines). Both must
train exactly what one device trains: the same samples per epoch, the same weights.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import ROOT
from stages.lib.params import ParamError, UserError, load_params, validate_section
from stages.lib.study import history_file, training_record

TIMEOUT = 240  # seconds per stage process; a tiny run takes ~15 s
# Makes N logical CPU devices (env LOGICAL_CPUS) before TensorFlow initialises, then runs
# each stage module given, in one process (one TensorFlow start), as `python -m` would.
DRIVER = """
import os, runpy, sys
import tensorflow as tf
n = int(os.environ.get("LOGICAL_CPUS", "1"))
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
for module in sys.argv[1:]:
    runpy.run_module(module, run_name="__main__")
if os.environ.get("SHARD_CHECK"):  # then print which examples each local replica gets
    import json, numpy as np, yaml
    from stages.lib import datasets, runtime
    strategy = runtime.strategy(yaml.safe_load(open("params.yaml"))["train"])
    ds, _ = datasets.training_batches(10, np.zeros(10), 4, 3, 2, datasets.plain_inputs(np.arange(10.0)[:, None]))
    for step, (x, y) in enumerate(strategy.experimental_distribute_dataset(ds)):
        local = [t.numpy().ravel().astype(int).tolist() for t in strategy.experimental_local_results(x)]
        print("SHARD", step, json.dumps(local))
"""
TWO_CPUS = ["/cpu:0", "/cpu:1"]


# ---------------------------------------------------------------- params and errors

def test_schema_accepts_and_rejects_distribute():
    base = load_params("train", path=ROOT / "params.yaml")["train"]
    assert base["distribute"] == "none" and base["devices"] == []
    for ok in ({"distribute": "mirrored", "devices": TWO_CPUS}, {"distribute": "multi_worker"}):
        validate_section("train", {**base, **ok})
    for bad, phrase in (
        ({"distribute": "horovod"}, "train.distribute must be one of none, mirrored, multi_worker"),
        ({"devices": "/gpu:0"}, "train.devices must be a list"),
        ({"devices": ["/gpu:0", "/gpu:0"]}, "train.devices must be a list of distinct"),
    ):
        with pytest.raises(ParamError, match=phrase):
            validate_section("train", {**base, **bad})


def test_strategy_errors_name_the_problem(monkeypatch):
    import tensorflow as tf

    from stages.lib import runtime

    assert runtime.strategy({"distribute": "none", "devices": []}) is tf.distribute.get_strategy()
    with pytest.raises(UserError, match="train.devices only applies to train.distribute: mirrored"):
        runtime.strategy({"distribute": "none", "devices": ["/gpu:0"]})
    with pytest.raises(UserError, match=r"train.devices: /gpu:7 is not on this machine; it has /cpu:0"):
        runtime.strategy({"distribute": "mirrored", "devices": ["/gpu:7"]})
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match="TF_CONFIG is not set"):
        runtime.strategy({"distribute": "multi_worker", "devices": []})
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    with pytest.raises(UserError, match="TF_CONFIG must be JSON like"):
        runtime.strategy({"distribute": "multi_worker", "devices": []})


# ---------------------------------------------------------------- tiny stage runs

def tiny_project(path: Path, train_cfg: dict, weights: Path) -> Path:
    """The stages with synthetic arrays, VGG16 weights, and the features and augmentation
    bank that `extract_features` makes of them (run on one device, as it always is)."""
    shutil.copytree(ROOT / "stages", path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(precision="float32", distribute="none", devices=[])
    for stage in ("train_feature_clf", "train_aug_frozen"):
        # dropout 0: dropout masks are drawn per replica, so they would differ from one device
        params[stage].update(epochs=2, batch_size=8, dropout=0.0, dense_units=8, learning_rate=1e-3)
    params["vgg16"]["augment_bank"] = 2
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("validation", 8), ("test", 8)):
        labels = np.arange(n) % 2
        # brighter dogs: something the random-init VGG16 features carry
        images = (rng.integers(0, 128, (n, 32, 32, 3)) + 100 * labels[:, None, None, None]).astype(np.uint8)
        files = np.array([f"{i}.jpg" for i in range(n)])
        (path / "data/split/arrays").mkdir(parents=True, exist_ok=True)
        np.savez(path / "data/split/arrays" / f"{split}.npz", labels=labels.astype(np.uint8), files=files, images=images)
    (path / "data/weights").mkdir(parents=True, exist_ok=True)
    shutil.copy(weights, path / "data/weights/vgg16_notop.weights.h5")
    run_stages(path, "extract_features")
    params["train"].update(train_cfg)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def stage_env(path: Path, logical_cpus: int = 1, tf_config: dict | None = None, shard_check: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": str(path), "LOGICAL_CPUS": str(logical_cpus), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    env.pop("SHARD_CHECK", None)
    if shard_check:
        env["SHARD_CHECK"] = "1"
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def start(path: Path, stages: str, env: dict) -> subprocess.Popen:
    modules = [f"stages.{stage}" for stage in stages.split()]
    return subprocess.Popen([sys.executable, "-c", DRIVER, *modules], cwd=path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_all(procs: list[subprocess.Popen]) -> list[str]:
    """Wait for every process (bounded); kill all of them if any overruns or fails."""
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=TIMEOUT)
            outputs.append(out)
            assert proc.returncode == 0, f"stage failed ({proc.returncode}):\n{out[-4000:]}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return outputs


def run_stages(path: Path, stages: str, **env_args) -> str:
    return finish_all([start(path, stages, stage_env(path, **env_args))])[0]


def trained(path: Path, stage: str) -> tuple[list[np.ndarray], dict]:
    import keras

    model = keras.models.load_model(path / f"data/models/{stage}.keras", safe_mode=True)
    return [w for w in model.get_weights()], training_record(path / history_file(stage))


def assert_same_training(a, b):
    (weights_a, metrics_a), (weights_b, metrics_b) = a, b
    assert len(weights_a) == len(weights_b)
    for wa, wb in zip(weights_a, weights_b):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)
    for key in ("final_train_loss", "final_val_loss", "final_train_accuracy", "final_val_accuracy"):  # the run records' last epoch
        assert metrics_a[key] == pytest.approx(metrics_b[key], rel=1e-4, abs=1e-5), key


def expected_batches() -> list[list[int]]:
    """The global batches of the SHARD_CHECK stream (10 examples, batch 4, 2 epochs)."""
    from stages.lib import datasets

    ds, _ = datasets.training_batches(10, np.zeros(10), 4, 3, 2, datasets.plain_inputs(np.arange(10.0)[:, None]))
    return [x.numpy().ravel().astype(int).tolist() for x, _ in ds]


def shards(outputs: list[str]) -> list[list[list[int]]]:
    """Per step, the examples of every replica (all workers' outputs together)."""
    steps: dict[int, list] = {}
    for out in outputs:
        for line in out.splitlines():
            if line.startswith("SHARD "):
                _, step, local = line.split(" ", 2)
                steps.setdefault(int(step), []).extend(json.loads(local))
    return [steps[k] for k in sorted(steps)]


def assert_each_batch_split(per_step: list[list[list[int]]], replicas: int):
    """Every global batch is split across the replicas: none repeated, none dropped."""
    expected = expected_batches()
    assert len(per_step) == len(expected) == 6
    for parts, batch in zip(per_step, expected):
        assert len(parts) == replicas and all(parts), parts
        assert sorted(sum(parts, [])) == sorted(batch), (parts, batch)


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


BOTH = "train_feature_clf train_aug_frozen"  # dense on features; training on the augmentation bank


@pytest.fixture(scope="module")
def single_device(tmp_path_factory, random_vgg16_weights):
    path = tiny_project(tmp_path_factory.mktemp("single"), {"distribute": "none", "devices": []}, random_vgg16_weights)
    out = run_stages(path, BOTH)
    assert "distribute:" not in out
    return {stage: trained(path, stage) for stage in BOTH.split()}


@pytest.mark.slow
def test_mirrored_matches_one_device(tmp_path, single_device, random_vgg16_weights):
    """Both training paths on two replicas: train_feature_clf, and train_aug_frozen's bank
    (frozen prefix run once on one device, the suffix trained mirrored)."""
    path = tiny_project(tmp_path, {"distribute": "mirrored", "devices": TWO_CPUS}, random_vgg16_weights)
    out = run_stages(path, BOTH, logical_cpus=2, shard_check=True)
    assert "distribute: mirrored, 2 replicas in sync" in out, out
    assert "frozen layers block5_conv1..flatten once over the bank (32 + 8 activations)" in out, out
    assert_each_batch_split(shards([out]), replicas=2)
    for stage in BOTH.split():
        assert_same_training(trained(path, stage), single_device[stage])


@pytest.mark.slow
@pytest.mark.network
def test_multi_worker_matches_one_device(tmp_path, single_device, random_vgg16_weights):
    """Two workers on 127.0.0.1, one replica each, each in its own checkout."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    paths = [tiny_project(tmp_path / f"worker{i}", {"distribute": "multi_worker", "devices": []}, random_vgg16_weights)
             for i in range(2)]
    procs = [
        start(path, "train_feature_clf",
              stage_env(path, tf_config={"cluster": cluster, "task": {"type": "worker", "index": i}}, shard_check=True))
        for i, path in enumerate(paths)
    ]
    outputs = finish_all(procs)
    # each worker gets its half of every global batch (DATA auto-sharding)
    assert_each_batch_split(shards(outputs), replicas=2)
    for path, out in zip(paths, outputs):
        assert "distribute: multi_worker, 2 replicas in sync" in out, out
        assert_same_training(trained(path, "train_feature_clf"), single_device["train_feature_clf"])

