"""``ceap train``: a model from a table with declared features and a label, as an artefact.

The table is split by time when it has a time column (train on the earliest
rows, hold out the latest: what the model will face), else at random with a
seed. The artefact's ``meta.json`` records the features and their types, a
fingerprint of the training data, the held-out metrics, the split, the
creation time and the library versions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ceap.errors import SourceError
from ceap.ml.artefacts import (
    Artefact,
    FeatureSpec,
    ModelMeta,
    ModelRegistry,
    feature_type,
    fingerprint,
    library_versions,
)
from ceap.ml.data import TrainError, read_table, source_config
from ceap.ml.metrics import binary_metrics
from ceap.ml.trainers import KINDS, TRAINERS, TrainParams
from ceap.plugin import PluginContext
from ceap.scorers.base import feature_matrix

#: fewer rows than this cannot give a meaningful held-out measure
MIN_ROWS = 20

Say = Callable[[str], None]


@dataclass(frozen=True)
class TrainOptions:
    name: str
    features: list[str]
    label: str
    time_column: str | None = None
    kind: str = "lightgbm"
    test_share: float = 0.2
    params: TrainParams = field(default_factory=TrainParams)


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # row indices, in training order
    test: np.ndarray
    info: dict[str, Any]


def _check(table: pa.Table, o: TrainOptions) -> list[FeatureSpec]:
    if o.kind not in KINDS:
        raise TrainError(f"--kind: unknown kind {o.kind!r} (one of: {', '.join(KINDS)})")
    if not o.features:
        raise TrainError("--features: name at least one feature column")
    if len(set(o.features)) != len(o.features):
        raise TrainError("--features: a column is named twice")
    if not 0 < o.test_share < 1:
        raise TrainError("--test-share: must be between 0 and 1")
    if o.label in o.features or (o.time_column and o.time_column in o.features):
        raise TrainError("--features: the label and the time column cannot be features")
    have = table.column_names
    for option, names in (("--features", o.features), ("--label", [o.label]),
                          ("--time-column", [o.time_column] if o.time_column else [])):
        missing = [n for n in names if n not in have]
        if missing:
            raise TrainError(f"{option}: column {missing[0]!r} is not in the table "
                             f"(columns: {', '.join(have)})")
    specs = []
    for name in o.features:
        kind = feature_type(table.schema.field(name).type)
        if kind is None:
            raise TrainError(f"--features: column {name!r} holds {table.schema.field(name).type}, "
                             "not numbers; encode it as a number first")
        specs.append(FeatureSpec(name=name, type=kind))
    return specs


def labels(column: pa.ChunkedArray, name: str) -> np.ndarray:
    """The label as booleans: true/false or 0/1, nothing else."""
    if pa.types.is_boolean(column.type):
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) \
            or pa.types.is_decimal(column.type):
        values = np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False))
        odd = np.setdiff1d(np.unique(values), [0.0, 1.0])
        if odd.size:
            shown = ", ".join(f"{v:g}" for v in odd[:5])
            raise TrainError(f"--label: column {name!r} is not binary: besides 0 and 1 it holds "
                             f"{shown}{' ...' if odd.size > 5 else ''}")
        return values == 1.0
    raise TrainError(f"--label: column {name!r} holds {column.type}; a label is true/false or 0/1")


def split(table: pa.Table, y: np.ndarray, o: TrainOptions) -> Split:
    n = table.num_rows
    n_test = max(1, math.ceil(n * o.test_share))
    if o.time_column:
        column = table.column(o.time_column)
        kind = column.type
        if not (pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_integer(kind)
                or pa.types.is_floating(kind)):
            raise TrainError(f"--time-column: column {o.time_column!r} holds {kind}, "
                             "not a time, date or number")
        order = np.asarray(pc.sort_indices(table, sort_keys=[(o.time_column, "ascending")]))
        cutoff = column.take(pa.array([order[n - n_test]]))[0]
        is_test = np.asarray(pc.greater_equal(column, cutoff).to_numpy(zero_copy_only=False),
                             dtype=bool)
        train = order[~is_test[order]]
        test = order[is_test[order]]
        if train.size == 0:
            raise TrainError(f"--time-column: every row has the same latest {o.time_column}; "
                             "nothing is left to train on before the cutoff")
        info = {"method": "time", "column": o.time_column, "cutoff": _text(cutoff),
                "train_until": _text(column.take(pa.array([train[-1]]))[0]),
                "test_share": o.test_share,
                "description": f"train on rows with {o.time_column} < cutoff, "
                               f"test on rows with {o.time_column} >= cutoff"}
    else:
        perm = np.random.default_rng(o.params.seed).permutation(n)
        test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        info = {"method": "random", "seed": o.params.seed, "test_share": o.test_share,
                "description": "seeded random split (no time column given)"}
    for part, rows in (("training", train), ("held-out", test)):
        classes = np.unique(y[rows])
        if classes.size < 2:
            raise TrainError(f"too few rows: the {part} rows hold only label "
                             f"{bool(classes[0]) if classes.size else 'nothing'}; give more rows "
                             "with both outcomes (or change --test-share)")
    info.update(train_rows=int(train.size), test_rows=int(test.size))
    return Split(train, test, info)


def _text(value: pa.Scalar) -> Any:
    py = value.as_py()
    return py.isoformat() if hasattr(py, "isoformat") else py


def train(table: pa.Table, options: TrainOptions, registry: ModelRegistry,
          source: str | None = None, say: Say = lambda _: None) -> Artefact:
    """Train ``options.kind`` on ``table`` and publish it as the next version of its name."""
    specs = _check(table, options)
    used = [*options.features, options.label, *([options.time_column] if options.time_column else [])]
    table = table.select(used)
    known = pc.is_valid(table.column(options.label))
    if options.time_column:
        known = pc.and_(known, pc.is_valid(table.column(options.time_column)))
    dropped = table.num_rows - pc.sum(known).as_py() if table.num_rows else 0
    if dropped:
        table = table.filter(known)
        say(f"dropped {dropped} row(s) without a label or a time")
    if table.num_rows < MIN_ROWS:
        raise TrainError(f"too few rows: {table.num_rows} usable row(s), at least {MIN_ROWS} needed")
    y = labels(table.column(options.label), options.label)
    parts = split(table, y, options)
    info = parts.info
    say(f"split {info['method']}: {info['train_rows']} training rows, "
        f"{info['test_rows']} held-out rows" + (f" (from {info['cutoff']})" if "cutoff" in info else ""))
    try:
        matrix = feature_matrix(table, options.features)
    except SourceError as exc:
        raise TrainError(f"--features: {exc}") from None
    say(f"training {options.kind} on {len(options.features)} feature(s)"
        + ("" if options.kind == "river" else f", {options.params.trees} trees"))
    with registry.staging(options.name) as folder:
        fitted = TRAINERS[options.kind](matrix[parts.train], y[parts.train], list(options.features),
                                        options.params, folder)
        scores = fitted.predict(np.ascontiguousarray(matrix[parts.test]))
        metrics = {k: v for k, v in binary_metrics(y[parts.test], scores).items() if math.isfinite(v)}
        meta = ModelMeta(
            name=options.name, version=1, kind=fitted.kind,  # type: ignore[arg-type]
            file=fitted.file, features=specs, label=options.label,
            fingerprint=fingerprint(table), metrics=metrics, split=info,
            created_at=datetime.now(UTC), libraries=library_versions(*fitted.libraries),
            params=fitted.params, source=source, explainer=fitted.explainer)
        artefact = registry.publish(folder, meta)
    say(f"wrote {artefact.folder} ({artefact.meta.ref})")
    return artefact


def train_from_source(source: str, options: TrainOptions, context: PluginContext,
                      registry_dir: str = "models", say: Say = lambda _: None,
                      spec_file: bool = False) -> Artefact:
    """Read ``source`` (a data file or glob, or a YAML source block) and train on it."""
    config = source_config(source, context, spec_file=spec_file)
    try:
        table, bad, described = read_table(config, context)
    except SourceError as exc:
        raise TrainError(str(exc)) from None
    say(f"read {table.num_rows} rows from {described}")
    if bad:
        say(f"dropped {bad} row(s) whose declared columns did not parse")
    return train(table, options, ModelRegistry(context.path(registry_dir)), described, say)
