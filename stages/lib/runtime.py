"""Runtime set-up shared by every stage that runs TensorFlow: seed, precision policy and
the tf.distribute strategy. Apart from the fit loop (stages/lib/training.py) so that a stage
that only runs inference (extract_features) depends on this alone."""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from stages.lib.params import UserError
from stages.lib.study import CHECKPOINTS_DIR, checkpoints_dir


# ---------------------------------------------------------------- runtime

def cpuinfo_field(name: str) -> str | None:
    """The first `name : value` line of /proc/cpuinfo (Linux), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> set[str]:
    return set((cpuinfo_field("flags") or "").split())


def cpu_model() -> str:
    import platform

    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def machine() -> dict[str, str | int]:
    """What a stage ran on, for its metrics: the CPU, its kind for these convolutions
    (native bf16 or not) and the GPUs TensorFlow sees."""
    flags = cpu_flags()
    kind = next((k for k in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if k in flags), "other")
    gpus = tf.config.list_physical_devices("GPU")
    return {"cpu": cpu_model(), "cpu_kind": kind, "gpus": len(gpus),
            "precision": keras.mixed_precision.global_policy().name}


def resolve_precision(requested: str, gpus: list | None = None, flags: set[str] | None = None) -> str:
    """`auto`: float16 on a CUDA GPU, bfloat16 on a CPU with native bf16 (AVX512-BF16 or
    AMX), float32 elsewhere (emulated bf16 is slower than float32)."""
    if requested != "auto":
        return requested
    gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
    if gpus:
        return "mixed_float16"
    flags = cpu_flags() if flags is None else flags
    if flags & {"avx512_bf16", "amx_bf16"}:
        return "mixed_bfloat16"
    return "float32"


def check_checkpoints_dir() -> None:
    """CATSDOGS_CHECKPOINTS, when set, must name a folder (or a path where one can be made):
    a file there would fail after the first epoch with a traceback."""
    raw = os.environ.get("CATSDOGS_CHECKPOINTS", "")
    if not raw.strip():
        return
    folder = checkpoints_dir().absolute()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    problem = None
    if not probe.is_dir():
        problem = f"{probe} is a file, not a folder"
    elif not os.access(probe, os.W_OK | os.X_OK):
        problem = f"{probe} is not writable"
    if problem:
        raise UserError(f"environment variable CATSDOGS_CHECKPOINTS={raw!r} must name a folder the training stages "
                        f"can write, but {problem}; unset it to keep checkpoints in {CHECKPOINTS_DIR}")


def configure(train_cfg: dict) -> str:
    """Create the distribution strategy (first: multi-worker collectives must be set up
    before TensorFlow initialises), seed Python, NumPy and TensorFlow and set the precision
    policy; returns the policy."""
    check_checkpoints_dir()
    strategy(train_cfg)
    keras.utils.set_random_seed(train_cfg["seed"])
    policy = resolve_precision(train_cfg["precision"])
    keras.mixed_precision.set_global_policy(policy)
    print(f"precision: {policy} (asked for {train_cfg['precision']})")
    return policy


# ---------------------------------------------------------------- distribution

_STRATEGIES: dict[tuple, tf.distribute.Strategy] = {}


def tf_config() -> dict:
    """The standard TF_CONFIG env var (cluster and this task), checked; {} when unset."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return {}
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        ok = isinstance(workers, list) and workers and task["type"] in ("worker", "chief")
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise UserError(
            'TF_CONFIG must be JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, '
            f'"task": {{"type": "worker", "index": 0}}}}, got {raw!r}'
        )
    return config


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """tf.distribute's MultiWorkerMirroredStrategy, with `reduce` fixed for Keras 3.

    Keras 3's fit (3.15, TF 2.21) calls strategy.reduce with a nest of values (a data batch,
    when it builds the model) and with axis=0 on scalar logs (every step); the multi-worker
    strategy accepts neither (keras-team/keras#20585). This reduces each value on its own,
    and a scalar across replicas only (it has no batch axis). Everything else is TF's.
    """

    def reduce(self, reduce_op, value, axis):
        def one(v):
            t = v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v
            scalar = getattr(t, "shape", None) is not None and t.shape.rank == 0
            return super(MultiWorkerMirroredStrategy, self).reduce(reduce_op, v, None if scalar else axis)

        return tf.nest.map_structure(one, value)


def strategy(train_cfg: dict) -> tf.distribute.Strategy:
    """The tf.distribute strategy that `train.distribute` asks for (one per process).

    none: the default strategy (one device). mirrored: MirroredStrategy, synchronous
    data-parallel training over `train.devices` ([] = every local GPU, or the CPU when there
    is none). multi_worker: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG, each
    worker using its local GPUs (or its CPU).

    `batch_size` stays the GLOBAL batch: each step splits one batch across all replicas
    and averages their gradients, so a run computes the same updates as on one device.
    The learning rate is used as given; it is not scaled with the number of replicas.
    """
    kind, devices = train_cfg.get("distribute", "none"), list(train_cfg.get("devices") or [])
    if devices and kind != "mirrored":
        raise UserError(f"train.devices only applies to train.distribute: mirrored (distribute is {kind})")
    cache_key = (kind, tuple(devices))
    if cache_key in _STRATEGIES:
        return _STRATEGIES[cache_key]
    if kind == "none":
        made = tf.distribute.get_strategy()
    elif kind == "mirrored":
        def short(name: str) -> str:  # /job:localhost/.../device:GPU:0, /device:GPU:0, /gpu:0 -> gpu:0
            return name.lower().rsplit("device:", 1)[-1].lstrip("/")

        present = {short(d.name) for d in tf.config.list_logical_devices()}
        absent = [d for d in devices if short(d) not in present]
        if absent:
            raise UserError(f"train.devices: {absent[0]} is not on this machine; it has "
                            f"{', '.join('/' + d for d in sorted(present))} (or use [] for every local GPU)")
        made = tf.distribute.MirroredStrategy(devices=devices or None)
    else:  # multi_worker, the last kind params.py allows
        if not tf_config():
            raise UserError("train.distribute is multi_worker but TF_CONFIG is not set (see README, Scaling out)")
        made = MultiWorkerMirroredStrategy()
    if kind != "none":
        print(f"distribute: {kind}, {made.num_replicas_in_sync} replicas in sync")
    _STRATEGIES[cache_key] = made
    return made


def strategy_scope(train_cfg: dict):
    """Build, load and compile models inside this scope so that their variables (and the
    optimizer's) are mirrored and `fit` runs every step on all replicas."""
    return strategy(train_cfg).scope()
