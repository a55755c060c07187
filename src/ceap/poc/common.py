"""What the three proofs of concept share: feature SQL, LightGBM training, cached artefacts."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
from rich.table import Table

from ceap.scorers.base import feature_matrix
from ceap.sqlexpr import BATCH, quote, sandboxed_connection

DATA_DIR = Path("data") / "poc"
MODELS_DIR = Path("models") / "poc"


def with_features(table: pa.Table, features: dict[str, str]) -> pa.Table:
    """Add ``features`` (name -> SQL expression) to ``table`` the way a program does:
    in order, each one seeing the columns and the features before it."""
    sql_from = BATCH
    names = set(table.column_names)
    for name, expr in features.items():
        col = quote(name)
        select = f"* REPLACE (({expr}) AS {col})" if name in names else f"*, ({expr}) AS {col}"
        sql_from = f"(SELECT {select} FROM {sql_from})"
        names.add(name)
    con = sandboxed_connection()
    try:
        con.register(BATCH, table)
        return con.sql(f"SELECT * FROM {sql_from}").to_arrow_table()
    finally:
        con.close()


def lightgbm_params(seed: int, **overrides: Any) -> dict[str, Any]:
    """Deterministic LightGBM settings: one thread, fixed seeds."""
    return {
        "objective": "binary",
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_data_in_leaf": 40,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "verbosity": -1,
        **overrides,
    }


def train_lightgbm(table: pa.Table, features: list[str], labels: np.ndarray, out: Path, *,
                   seed: int, rounds: int, **params: Any) -> lgb.Booster:
    """Train a binary LightGBM model on ``features`` of ``table`` and save it as text."""
    x = feature_matrix(table, features)
    data = lgb.Dataset(x, label=labels.astype(np.float64), feature_name=features,
                       free_raw_data=True)
    booster = lgb.train(lightgbm_params(seed, **params), data, num_boost_round=rounds)
    out.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(out))
    return booster


def predict(model: Path, table: pa.Table, features: list[str]) -> np.ndarray:
    """Scores of a saved LightGBM text model, as the lightgbm scorer computes them."""
    booster = lgb.Booster(model_file=str(model))
    return np.asarray(booster.predict(feature_matrix(table, features), num_threads=1),
                      dtype=np.float64)


def bool_column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=bool)


# -- cached artefacts ---------------------------------------------------------------------------

def read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_current(manifest: dict[str, Any], wanted: dict[str, Any], root: Path) -> bool:
    """Whether ``manifest`` was made for ``wanted`` and every file it lists still exists."""
    files = manifest.get("files", [])
    return ({k: manifest.get(k) for k in wanted} == wanted and bool(files)
            and all((root / f).is_file() for f in files))


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


# -- printing -----------------------------------------------------------------------------------

def figures_table(title: str, rows: Iterable[tuple[str, str, str]],
                  columns: tuple[str, str, str] = ("metric", "model", "baseline")) -> Table:
    """A table of figures: one row per metric, the model beside its baseline."""
    table = Table(title=title, title_justify="left")
    table.add_column(columns[0])
    table.add_column(columns[1], justify="right")
    table.add_column(columns[2], justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def poc_arguments(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The command line every ``python -m ceap.poc.<name>`` shares."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n")[0])
    parser.add_argument("--project", type=Path, default=Path("."), help="project folder (default: .)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--force", action="store_true", help="prepare again even if cached")
    return parser
