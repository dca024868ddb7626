"""Reading and validating params.yaml.

Every stage reads its own sections through `load_params()`, which checks them against `SCHEMA`
before any work starts: a mistyped key or an impossible value stops the stage with one line
that names the key, the value and what is allowed, never with a traceback from deep inside
TensorFlow.
"""

from __future__ import annotations

import difflib
import errno
import math
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

PARAMS_FILE = Path("params.yaml")


class UserError(Exception):
    """A problem the user can fix (a param, an input file): reported without a traceback."""


class ParamError(UserError):
    pass


@dataclass(frozen=True)
class Spec:
    """What one param may be: a check that returns an error phrase, or None when valid."""

    check: Callable[[Any], str | None]


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def positive_int(at_most: int | None = None) -> Spec:
    def check(v):
        if not (_is_int(v) and v > 0):
            return "must be a positive integer"
        return f"must be at most {at_most}" if at_most is not None and v > at_most else None

    return Spec(check)


def non_negative_int() -> Spec:
    return Spec(lambda v: None if _is_int(v) and v >= 0 else "must be an integer >= 0")


def int_between(lo: int, hi: int) -> Spec:
    return Spec(lambda v: None if _is_int(v) and lo <= v <= hi else f"must be an integer in [{lo}, {hi}]")


def number_between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Spec:
    def check(v):
        ok = _is_number(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        if ok:
            return None
        hint = ""
        if isinstance(v, str):
            try:
                float(v)
                # YAML 1.1 reads 1e-4 (no dot) as text; 1.0e-4 is a number.
                hint = " (text, not a number: write it with a dot, e.g. 1.0e-4)"
            except ValueError:
                pass
        return f"must be a number in {left}{lo}, {hi}{right}{hint}"

    return Spec(check)


def seed() -> Spec:
    # NumPy and TensorFlow take seeds in [0, 2**32); a larger one passed validation, then crashed.
    return int_between(0, 2**32 - 1)


def boolean() -> Spec:
    return Spec(lambda v: None if isinstance(v, bool) else "must be true or false")


def one_of(*choices: str) -> Spec:
    return Spec(lambda v: None if v in choices else "must be one of " + ", ".join(choices))


def non_empty_str() -> Spec:
    return Spec(lambda v: None if isinstance(v, str) and v.strip() else "must be a non-empty string")


def sources() -> Spec:
    """One source, or several tried in order until one works."""

    def check(v):
        if isinstance(v, str) and v.strip():
            return None
        ok = isinstance(v, list) and v and all(isinstance(s, str) and s.strip() for s in v)
        return None if ok else "must be a source (path, URL or kaggle) or a non-empty list of them"

    return Spec(check)


def count_or_fraction() -> Spec:
    """Images per class: a count (int >= 1), or a fraction of each class (a float in (0, 1))."""

    def check(v):
        if _is_int(v) and v >= 1 or isinstance(v, float) and 0 < v < 1:
            return None
        return "must be a count of images per class (an integer >= 1) or a fraction of each class (a number in (0, 1))"

    return Spec(check)


def class_names() -> Spec:
    """null (the data's two class names, sorted), or both names: negative first, positive second."""

    def check(v):
        ok = v is None or (isinstance(v, list) and len(v) == 2 and all(isinstance(s, str) and s for s in v)
                           and v[0] != v[1])
        return None if ok else "must be null (the data's classes, sorted) or a list of two distinct class names, negative first"

    return Spec(check)


def dropout() -> Spec:
    # A rate of 1 drops every unit: the layer outputs zeros and nothing can learn.
    return number_between(0, 1, hi_open=True)


def str_list() -> Spec:
    def check(v):
        ok = isinstance(v, list) and v and all(isinstance(s, str) and s for s in v)
        return None if ok else "must be a non-empty list of layer names"

    return Spec(check)


def device_list() -> Spec:
    def check(v):
        ok = isinstance(v, list) and all(isinstance(s, str) and s.strip() for s in v) and len(set(v)) == len(v)
        return None if ok else "must be a list of distinct device names like /gpu:0 ([] = all local GPUs)"

    return Spec(check)


# Keys every training stage has, and the sections of the two stages of each model family.
TRAINING = {
    "batch_size": int_between(1, 4096),
    # generous: the longest run here is 160 epochs; a typo of 10**12 is not a plan
    "epochs": positive_int(at_most=100_000),
    "learning_rate": number_between(0, 1, lo_open=True),
    "lr_decay": one_of("none", "cosine"),  # cosine: from learning_rate to 0 over all epochs
    "early_stopping": non_negative_int(),
    "restore_best": boolean(),
}
SMALL_CONVNET = {**TRAINING, "dropout": dropout(), "augment": boolean()}
VGG16_WITH_HEAD = {**TRAINING, "dense_units": positive_int(), "dropout": dropout()}


SCHEMA: dict[str, dict[str, Spec]] = {
    "download": {"source": sources(), "vgg16_weights": non_empty_str()},
    "split": {
        # a count per class, or a fraction of each class (stratified); see stages/split.py
        "train_per_class": count_or_fraction(),
        "val_per_class": count_or_fraction(),
        "test_per_class": count_or_fraction(),
        "classes": class_names(),  # null: the data's names, sorted; label 1 is the second
        "order": one_of("id", "shuffle"),
        "seed": seed(),
        "image_size": int_between(48, 1024),  # the custom convnet needs 48 px
        # the extended test set: at most this many leftover images per class; 0 = none
        "extended_per_class": non_negative_int(),
    },
    "train": {
        "seed": seed(),
        "precision": one_of("auto", "float32", "mixed_bfloat16", "mixed_float16"),
        # tf.distribute strategy of every training stage; batch_size stays the global batch
        "distribute": one_of("none", "mirrored", "multi_worker"),
        "devices": device_list(),  # mirrored only; [] = every local GPU
        # balanced: weigh each class's examples n / (2 n_class) in the loss; none: all 1
        "class_weight": one_of("none", "balanced"),
    },
    "augmentation": {
        "rotation": number_between(0, 180),
        "width_shift": number_between(0, 1),
        "height_shift": number_between(0, 1),
        "shear": number_between(0, 1.5),
        "zoom": number_between(0, 0.9),
        "horizontal_flip": boolean(),
        "fill_mode": one_of("nearest", "reflect", "wrap", "constant"),
    },
    "vgg16": {
        "preprocessing": one_of("imagenet", "rescale"),
        # K augmented copies of each training image through blocks 1-4, once (extract_features)
        "augment_bank": int_between(0, 1000),
    },
    "train_custom": SMALL_CONVNET,
    "train_custom_aug": SMALL_CONVNET,
    "extract_features": {"batch_size": int_between(1, 4096)},
    "train_feature_clf": VGG16_WITH_HEAD,
    "train_aug_frozen": VGG16_WITH_HEAD,
    "finetune": {**TRAINING, "unfreeze": str_list()},
    "evaluate": {"batch_size": int_between(1, 4096)},
}


def did_you_mean(name: str, known, show: Callable[[str], str]) -> str:
    """' (did you mean X?)' for the known name closest to a misspelt one, else ''."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {show(close[0])}?)" if close else ""


def validate_section(name: str, values: Any) -> dict:
    """Check one section against SCHEMA; raise ParamError naming the first bad key."""
    spec = SCHEMA[name]
    if not isinstance(values, dict):
        raise ParamError(f"{name} must be a mapping of keys to values, got {values!r}")
    unknown = sorted(set(values) - set(spec))
    if unknown:
        suggestion = did_you_mean(unknown[0], spec, lambda key: f"{name}.{key}")
        raise ParamError(f"{name}.{unknown[0]} is not a known param{suggestion}; {name} takes: {', '.join(spec)}")
    missing = [k for k in spec if k not in values]
    if missing:
        raise ParamError(f"{name}.{missing[0]} is missing from {PARAMS_FILE}")
    for key, rule in spec.items():
        problem = rule.check(values[key])
        if problem:
            raise ParamError(f"{name}.{key} {problem}, got {values[key]!r}")
    patience, epochs = values.get("early_stopping", 0), values.get("epochs")
    if patience and epochs is not None and patience >= epochs:
        # Stopping needs `patience` epochs without improvement after the first: never happens.
        raise ParamError(f"{name}.early_stopping must be below {name}.epochs ({epochs}) or 0 (off), got {patience}: "
                         "with that patience training can never stop early")
    return dict(values)


class _ParamsLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping as `dvc repro` does
    (PyYAML silently keeps the last one, so the stage and DVC would read different params)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: the base loader says so
                break
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given a second time (first on line {first}); keep one, as "
                    "dvc repro requires", key_node.start_mark)
        return super().construct_mapping(node, deep)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's message in one line: what is wrong, and where."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem:
        mark = error.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        context = f"{error.context}: " if error.context else ""
        return f"{context}{error.problem}{where}"
    return " ".join(str(error).split())


def read_params_file(path: Path) -> Any:
    """The parsed params file; whatever is wrong with the file itself is one ParamError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ParamError(f"{path} not found: run stages from the project root") from None
    except IsADirectoryError:
        raise ParamError(f"{path} is a folder, not a file: it must be the YAML file of params") from None
    except OSError as e:
        raise ParamError(f"{path} cannot be read: {e.strerror}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ParamError(f"{path} is UTF-16 text; save it as UTF-8 (DVC reads params files as UTF-8)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ParamError(f"{path} is not UTF-8 text: byte 0x{raw[e.start]:02x} on line {line} (Latin-1 or another "
                         "legacy encoding?); save it as UTF-8") from None
    loader = _ParamsLoader(text)  # a SafeLoader: plain data only, no Python objects
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise ParamError(f"{path} is not valid YAML: {_yaml_problem(e)}") from None
    finally:
        loader.dispose()


def load_params(*sections: str, path: Path | str = PARAMS_FILE) -> dict[str, dict]:
    """Read and validate the named sections of params.yaml."""
    path = Path(path)
    params = read_params_file(path) or {}
    if not isinstance(params, dict):
        raise ParamError(f"{path} must be a mapping of sections (download:, split:, ...), got {type(params).__name__}")
    unknown = sorted(str(name) for name in params if name not in SCHEMA)
    if unknown:
        suggestion = did_you_mean(unknown[0], SCHEMA, lambda section: f"'{section}'")
        raise ParamError(f"{path}: '{unknown[0]}' is not a known section{suggestion}; "
                         f"the sections are: {', '.join(SCHEMA)}")
    out = {}
    for name in sections:
        if name not in params:
            raise ParamError(f"{path} has no section '{name}'")
        out[name] = validate_section(name, params[name])
    return out


class Terminated(BaseException):
    """SIGTERM arrived. Raised like KeyboardInterrupt (not an Exception, so no `except
    Exception` swallows it): the stack unwinds and every `finally` and context manager
    removes its temporary files, as on Ctrl-C."""


def _in_a_worker(signum) -> bool:
    """In a forked worker process (which inherited the stage's handlers), die as the signal
    would, silently: Ctrl-C reaches every process of the terminal's group, and each worker
    would print its own KeyboardInterrupt traceback."""
    if os.getpid() == _STAGE_PID:
        return False
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return True


def _stop_workers() -> None:
    import multiprocessing

    for child in multiprocessing.active_children():  # pool workers would finish their queue first
        child.terminate()


def _terminate(signum, frame) -> None:
    if _in_a_worker(signum):
        return
    _stop_workers()
    raise Terminated


def _interrupt(signum, frame) -> None:
    if _in_a_worker(signum):
        return
    _stop_workers()
    raise KeyboardInterrupt


_STAGE_PID = os.getpid()


def printable(text: str) -> str:
    """`text` with the bytes of a file name that is not UTF-8 (which Python holds as lone
    surrogates) written as escapes, e.g. caf\\xe9.jpg: printing or writing it as UTF-8 then
    cannot fail."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def run_stage(main: Callable[[], None], *, clean_up_on_sigterm: bool = False) -> None:
    """Run a stage's main(); a UserError becomes one clear line on stderr and exit code 2.

    Ctrl-C (SIGINT) unwinds the stack, so every `finally` removes its temporary files, and
    ends with one line and code 130 (128 + SIGINT), not a KeyboardInterrupt traceback.
    With `clean_up_on_sigterm`, SIGTERM (what `kill`, a job scheduler or a closing terminal
    send) unwinds the same way and exits with one line and code 143 (128 + SIGTERM).
    A full disk anywhere is one line naming the file, whichever stage meets it.
    """
    global _STAGE_PID
    stage = Path(sys.argv[0]).stem or "stage"
    _STAGE_PID = os.getpid()
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when the shell ignores it (nohup, &)
        signal.signal(signal.SIGINT, _interrupt)
    if clean_up_on_sigterm:
        signal.signal(signal.SIGTERM, _terminate)
    stopped = "its temporary files were removed, rerun it to finish"
    try:
        main()
    except UserError as e:
        print(f"error: {printable(str(e))}", file=sys.stderr)
        sys.exit(2)
    except Terminated:
        print(f"error: {stage} stopped by SIGTERM; {stopped}", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    except KeyboardInterrupt:
        print(f"error: {stage} stopped by Ctrl-C (SIGINT); {stopped}", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # A writer outside outputs.atomic_* (which name their folder): name what it wrote.
        where = f" writing {e.filename}" if e.filename else ""
        print(f"error: no space left on the disk{where} ({os.strerror(e.errno)}): free some space and rerun",
              file=sys.stderr)
        sys.exit(2)
