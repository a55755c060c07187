"""The demo's three batch programs, end to end: who gets the action, who does not, and why.

Hand-made rows pin down each filter, the threshold and the selection; runs over
the generated demo data check the same rules hold for every candidate.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from ceap.demo import data as demo_data
from ceap.demo.models import roc_auc, train_churn_model
from ceap.demo.runner import run_demo
from ceap.errors import RunError
from ceap.model import Candidate, CandidateQuery
from ceap.plugin import PluginContext
from ceap.runtime import RunResult, run_program
from ceap.spec import load_program
from ceap.store import Store, open_store

PROGRAMS = Path(__file__).resolve().parents[1] / "programs"
CUSTOMERS = 2_000


@functools.cache
def now() -> datetime:
    """When these tests run: read once, by the first test that asks, never at import."""
    return datetime.now(UTC).replace(microsecond=0)


def today() -> date:
    return now().date()


# -- fixtures and helpers ------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A demo project with generated data (2,000 customers) and a trained churn model."""
    root = tmp_path_factory.mktemp("demo")
    paths = demo_data.generate(root / "data", customers=CUSTOMERS, seed=7, today=today())
    metrics = train_churn_model(paths["churn_history"], root / "models" / "churn.txt", seed=7)
    return {"root": root, "paths": paths, "metrics": metrics}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    yield s
    s.close()


def run(program: str, project: Path, store: Store) -> RunResult:
    spec = load_program(PROGRAMS / f"{program}.yaml")
    return run_program(spec, store, PluginContext(base_dir=project), now=now())


def candidates(store: Store, program: str) -> dict[str, Candidate]:
    found = store.candidates(CandidateQuery(program=program, limit=1_000_000))
    by_customer = {c.customer_id: c for c in found}
    assert len(by_customer) == len(found), "one candidate per customer"
    return by_customer


def rows(path: Path, sql: str = "SELECT *") -> list[dict]:
    reader = "read_csv" if path.suffix == ".csv" else "read_parquet"
    scan = f"{reader}('{path}', sample_size=-1)" if reader == "read_csv" else f"{reader}('{path}')"
    with duckdb.connect() as con:
        return con.sql(f"{sql} FROM {scan}").to_arrow_table().to_pylist()


def model_project(tmp_path: Path, demo: dict) -> Path:
    (tmp_path / "models").mkdir()
    shutil.copy(demo["root"] / "models" / "churn.txt", tmp_path / "models" / "churn.txt")
    (tmp_path / "data").mkdir()
    return tmp_path


def engagement_row(customer_id: str, *, status: str = "active", prev: int = 20, last: int = 20,
                   days_since_login: int = 1, tickets: int = 0, tenure: int = 400,
                   ltv: float = 300.0) -> dict:
    return {"customer_id": customer_id, "country": "DE", "plan": "premium", "tenure_days": tenure,
            "lifetime_value": ltv, "sessions_last_30d": last, "sessions_prev_30d": prev,
            "days_since_last_login": days_since_login, "support_tickets_30d": tickets,
            "status": status, "marketplace": "EU"}


def churned_row(customer_id: str, days_ago: int, *, reason: str = "price", ltv: float = 1200.0,
                opened: bool = True, months: int = 24, price: float = 39.99) -> dict:
    return {"customer_id": customer_id, "churned_at": (today() - timedelta(days=days_ago)).isoformat(),
            "churn_reason": reason, "lifetime_value": ltv, "months_subscribed": months,
            "last_plan_price": price, "opened_last_campaign": opened}


# -- churn prevention ------------------------------------------------------------
def test_churn_prevention_hand_made_customers(tmp_path: Path, demo: dict, store: Store) -> None:
    project = model_project(tmp_path, demo)
    pq.write_table(pa.Table.from_pylist([
        # churning hard, but the account is already closed: win-back's business
        engagement_row("C_CLOSED", status="closed", prev=30, last=0, days_since_login=40, tickets=3),
        # steady use: nothing to prevent
        engagement_row("C_STEADY", prev=20, last=21),
        # lost everything, but of too little use to call it a decline
        engagement_row("C_LIGHT", prev=3, last=0, days_since_login=25),
        # sessions collapsed, absent for weeks, complaining: the one to save
        engagement_row("C_RISK", prev=25, last=2, days_since_login=20, tickets=3, tenure=120,
                       ltv=1500.0),
    ]), project / "data" / "engagement.parquet")

    result = run("churn_prevention", project, store)

    assert result.funnel.filters == {"active_account": 1, "declining_engagement": 2}
    assert result.funnel.eligible == 1
    found = candidates(store, "churn_prevention")
    assert set(found) == {"C_RISK"}
    risk = found["C_RISK"]
    model_hash = hashlib.sha256((project / "models" / "churn.txt").read_bytes()).hexdigest()[:12]
    assert risk.model == f"churn@{model_hash}"
    assert risk.score >= 0.5
    assert risk.action_type == "offer" and risk.channels == ["email", "account_manager"]  # high value
    assert risk.context == {"marketplace": "EU"}
    assert risk.payload["offer"] == "loyalty_discount" and risk.payload["discount_pct"] == 20
    assert risk.payload["high_value"] is True
    assert risk.payload["engagement_drop"] == pytest.approx(23 / 25)
    assert risk.status == ("held_out" if risk.holdout else "pending")


def test_churn_prevention_on_demo_data(demo: dict, store: Store, tmp_path: Path) -> None:
    engagement = {r["customer_id"]: r for r in rows(demo["paths"]["engagement"])}
    result = run("churn_prevention", demo["root"], store)
    assert result.ok

    closed = [c for c, r in engagement.items() if r["status"] == "closed"]
    assert closed and result.funnel.filters["active_account"] == len(closed)
    found = candidates(store, "churn_prevention")
    assert found and len(found) == result.funnel.selected
    assert not set(found) & set(closed), "closed accounts never become candidates"
    for cid, cand in found.items():
        row = engagement[cid]
        assert row["sessions_prev_30d"] >= 5
        drop = (row["sessions_prev_30d"] - row["sessions_last_30d"]) / row["sessions_prev_30d"]
        assert drop >= 0.4
        assert cand.model.startswith("churn@") and cand.score >= 0.5
        assert cand.context == {"marketplace": row["marketplace"]}
        assert cand.payload["plan"] == row["plan"]
        # the account manager's call task for high-value customers only (action.channels_if)
        assert cand.channels == (["email", "account_manager"] if row["lifetime_value"] >= 1000 else ["email"])
        assert cand.status == ("held_out" if cand.holdout else "pending")

    held = [c for c in found.values() if c.holdout]
    assert len(held) == result.funnel.held_out > 0
    assert 0.02 < len(held) / len(found) < 0.25  # a 10% control group

    again = run("churn_prevention", demo["root"], store)
    assert again.written is not None
    assert again.written.inserted == 0 and again.written.duplicates == len(found)
    assert len(candidates(store, "churn_prevention")) == len(found)

    # holdout membership is a function of the customer: a fresh store holds out the same people
    other = open_store(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        run("churn_prevention", demo["root"], other)
        assert {c for c, x in candidates(other, "churn_prevention").items() if x.holdout} == \
            {c.customer_id for c in held}
    finally:
        other.close()


# -- win-back --------------------------------------------------------------------
def test_win_back_hand_made_customers(tmp_path: Path, store: Store) -> None:
    (tmp_path / "data").mkdir()
    pacsv.write_csv(pa.Table.from_pylist([
        churned_row("C_QUALIFIES", 45),
        churned_row("C_DAY_30", 30),
        churned_row("C_DAY_90", 90),
        churned_row("C_TOO_RECENT", 10),
        churned_row("C_DAY_91", 91),
        churned_row("C_LONG_GONE", 200),
        churned_row("C_LOW_VALUE", 45, ltv=150.0),
        churned_row("C_SUPPORT", 45, reason="support"),
        # qualifies on every filter, but unlikely to come back: below the threshold
        churned_row("C_UNLIKELY", 85, ltv=450.0, opened=False, months=2, price=9.99),
    ]), tmp_path / "data" / "churned_customers.csv")

    result = run("win_back", tmp_path, store)

    assert result.funnel.quarantined == 0
    assert result.funnel.filters == {"churned_30_to_90_days_ago": 3, "high_lifetime_value": 1,
                                     "left_over_price": 1}
    assert result.funnel.eligible == 4 and result.funnel.below_threshold == 1
    found = candidates(store, "win_back")
    assert set(found) == {"C_QUALIFIES", "C_DAY_30", "C_DAY_90"}
    offer = found["C_QUALIFIES"]
    assert offer.action_type == "offer" and offer.channels == ["email"]
    assert offer.model == "win_back_likelihood_v1"
    assert offer.payload["offer"] == "50% off for 3 months"
    assert offer.payload["discount_pct"] == 50 and offer.payload["duration_months"] == 3
    assert offer.payload["days_since_churn"] == 45
    assert offer.payload["lifetime_value"] == 1200.0 and offer.payload["churn_reason"] == "price"


def test_win_back_quarantines_bad_rows_of_demo_data(demo: dict, store: Store) -> None:
    result = run("win_back", demo["root"], store)
    assert result.ok

    bad = store.quarantined("default", result.run.run_id)
    assert result.funnel.quarantined == len(bad) == len(demo_data.BAD_CHURN_ROWS)
    reasons = sorted(b["reason"] for b in bad)
    assert reasons == sorted(["column churned_at: not a valid date"] * 2
                             + ["column lifetime_value: not a valid float",
                                "customer id (customer_id) is missing"])
    raw = {json.loads(b["row"])["churned_at"]: b["reason"] for b in bad}
    assert raw["not-a-date"] == raw["2024-13-45"] == "column churned_at: not a valid date"

    found = candidates(store, "win_back")
    assert found
    assert not set(found) & {"C900001", "C900003", "C900004"}
    churned = {r["customer_id"]: r for r in rows(demo["paths"]["churned_customers"])}
    for cid, cand in found.items():
        row = churned[cid]
        assert 30 <= (today() - date.fromisoformat(row["churned_at"])).days <= 90
        assert float(row["lifetime_value"]) >= 400 and row["churn_reason"] == "price"
        assert cand.payload["discount_pct"] == 50 and cand.payload["offer_code"] == "COMEBACK50"
        assert cand.status == ("held_out" if cand.holdout else "pending")


def test_win_back_refuses_a_mostly_bad_file(tmp_path: Path, store: Store) -> None:
    (tmp_path / "data").mkdir()
    table = pa.Table.from_pylist([churned_row("C_GOOD", 45), churned_row("C_BAD", 45)])
    dates = pa.array([table.column("churned_at")[0].as_py(), "yesterday"])
    pacsv.write_csv(table.set_column(1, "churned_at", dates), tmp_path / "data" / "churned_customers.csv")

    with pytest.raises(RunError, match="max_bad_share"):
        run("win_back", tmp_path, store)
    assert candidates(store, "win_back") == {}
    assert store.runs("default", "win_back")[0].status == "failed"


# -- product recommendations -----------------------------------------------------
def test_product_recommendations_hand_made_views(tmp_path: Path, store: Store) -> None:
    def view(customer: str, product: str, views: int, *, purchased: bool = False,
             cart: bool = False, price: float = 50.0) -> dict:
        return {"customer_id": customer, "product_id": product, "category": "home",
                "views_7d": views, "purchased": purchased, "price": price, "added_to_cart": cart,
                "marketplace": "US"}

    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist([
        view("C_X", "P1", 5, cart=True),            # the best pick for X
        view("C_X", "P2", 9, purchased=True),       # bought: never recommended
        view("C_X", "P3", 3),                       # only 3 views
        view("C_X", "P4", 6, price=30.0),           # qualifies, but X gets one e-mail: P1
        view("C_Y", "P2", 12, purchased=True),
        view("C_Y", "P5", 2),
        view("C_Z", "P6", 4, price=500.0),          # qualifies, low purchase intent
    ]), tmp_path / "data" / "product_views.parquet")

    result = run("product_recommendations", tmp_path, store)

    assert result.funnel.filters == {"viewed_more_than_3_times": 2, "not_purchased": 2}
    assert result.funnel.eligible == 3
    assert result.funnel.below_threshold == 1 and result.funnel.duplicate_customer == 1
    found = candidates(store, "product_recommendations")
    assert set(found) == {"C_X"}
    rec = found["C_X"]
    assert rec.subject_id == "P1" and rec.action_type == "recommend" and rec.channels == ["email"]
    assert rec.payload == {"discount_pct": 10, "product_id": "P1", "category": "home", "price": 50.0}
    assert rec.context == {"marketplace": "US"} and rec.model == "purchase_intent_v1"


def test_product_recommendations_on_demo_data(demo: dict, store: Store) -> None:
    views = {(r["customer_id"], r["product_id"]): r for r in rows(demo["paths"]["product_views"])}
    result = run("product_recommendations", demo["root"], store)
    assert result.ok

    found = store.candidates(CandidateQuery(program="product_recommendations", limit=1_000_000))
    assert found and len(found) == result.funnel.selected
    assert len({c.customer_id for c in found}) == len(found), "at most one per customer"
    for cand in found:
        row = views[(cand.customer_id, cand.subject_id)]
        assert not row["purchased"] and row["views_7d"] > 3
        assert cand.payload["product_id"] == cand.subject_id
        assert cand.payload["category"] == row["category"] and cand.payload["price"] == row["price"]
        assert cand.status == ("held_out" if cand.holdout else "pending")
    assert result.funnel.filters["not_purchased"] > 0


# -- data, model and the demo runner ---------------------------------------------
def test_generation_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    first = demo_data.generate(tmp_path / "a", customers=500, seed=11, today=today())
    second = demo_data.generate(tmp_path / "b", customers=500, seed=11, today=today())
    other = demo_data.generate(tmp_path / "c", customers=500, seed=12, today=today())
    for name, path in first.items():
        assert path.read_bytes() == second[name].read_bytes(), name
    assert first["engagement"].read_bytes() != other["engagement"].read_bytes()

    engagement = pq.read_table(first["engagement"])
    assert engagement.num_rows == 500
    assert set(engagement.column("status").to_pylist()) == {"active", "closed"}
    views = pq.read_table(first["product_views"])
    assert views.num_rows > 2 * engagement.num_rows


def test_churn_model_learns_the_hidden_relationship(demo: dict, tmp_path: Path) -> None:
    metrics = demo["metrics"]
    assert metrics["trees"] == 100 and metrics["features"] == demo_data.CHURN_FEATURES
    assert metrics["auc"] > 0.7
    again = train_churn_model(demo["paths"]["churn_history"], tmp_path / "churn.txt", seed=7)
    assert again["auc"] == metrics["auc"]
    assert (tmp_path / "churn.txt").read_bytes() == (demo["root"] / "models" / "churn.txt").read_bytes()


def test_roc_auc_handles_ties() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)


def test_run_demo_runs_the_batch_programs_and_reuses_its_data(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEAP_SIGNING_SECRET", "a-signing-secret-for-tests-only")  # tracked links
    shutil.copytree(PROGRAMS, tmp_path / "programs")
    shutil.copytree(PROGRAMS.parent / "templates", tmp_path / "templates")
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    console = Console(record=True, width=140)
    at = datetime.now(UTC)  # the demo dispatches on the real clock: run it at the real now
    results = run_demo(tmp_path, url, customers=1_000, seed=3, console=console, now=at, pocs=False)

    from ceap.demo.runner import PROGRAMS as DEMO_PROGRAMS

    assert [r.program for r in results] == list(DEMO_PROGRAMS)
    assert all(r.ok for r in results), [r.error for r in results]
    assert all(r.written and r.written.inserted > 0 for r in results)
    text = console.export_text()
    for r in results:
        assert r.program in text
    assert "held out" in text and "churn@" in text and "quarantine" in text
    # the measured experiment on simulated customers (tests/test_demo_simulated.py has more)
    assert "discount_offer: uplift against the holdout" in text and "all treated" in text
    # the delivery half: every due candidate was sent or suppressed by a named policy
    store = open_store(url)
    with store.tx() as tx:
        outcomes = dict(tx.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall())
        policies = {r[0].split(":")[0] for r in tx.execute(
            "SELECT policy FROM deliveries WHERE status = 'suppressed'").fetchall()}
        emails = tx.execute("SELECT count(*) FROM deliveries WHERE channel = 'email' "
                            "AND status = 'sent' AND program <> 'discount_offer'").fetchone()[0]
        waiting = tx.execute("SELECT count(*) FROM candidates WHERE status = 'pending' "
                             "AND not_before <= ? AND expires_at > ?",
                             (tx.ts(datetime.now(UTC)), tx.ts(datetime.now(UTC)))).fetchone()[0]
    assert outcomes.get("sent", 0) > 0 and waiting == 0
    assert set(outcomes) <= {"sent", "delivered", "suppressed"}
    assert policies <= {"consent", "no_address", "frequency_cap", "no_channel"}
    entered = re.search(r"journeys \(cart_journey\): ([\d,]+) customers entered", text)
    assert entered and int(entered.group(1).replace(",", "")) > 0  # the demo's journey
    received = re.search(r"SMTP server received ([\d,]+) e-mails", text)
    assert received and int(received.group(1).replace(",", "")) == emails
    tasks = re.search(r"local CRM ([\d,]+) call tasks", text)  # churn_prevention's high-value customers
    assert tasks and int(tasks.group(1).replace(",", "")) > 0
    manifest = tmp_path / "data" / "demo.json"
    assert json.loads(manifest.read_text())["churn_model"]["auc"] > 0.7
    stamp = manifest.stat().st_mtime_ns

    console = Console(record=True, width=140)
    again = run_demo(tmp_path, url, customers=1_000, seed=3, console=console, now=at, pocs=False)
    assert manifest.stat().st_mtime_ns == stamp
    text = console.export_text()
    assert "up to date" in text
    assert "discount_offer: A/B test" in text and "0 new candidates" in text
    assert all(r.written and r.written.inserted == 0 for r in again)
