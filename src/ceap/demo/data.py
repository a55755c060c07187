"""The demo's data: customers, churned customers, product views and a labelled history.

Everything is drawn from one seeded generator, vectorised with numpy, and
dated relative to ``today``, so the same seed and day give the same files and
"churned 45 days ago" means the same thing whenever the demo runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ENGAGEMENT = "engagement.parquet"
CHURNED = "churned_customers.csv"
PRODUCT_VIEWS = "product_views.parquet"
CHURN_HISTORY = "churn_history.parquet"

#: the columns a churn model learns from (``engagement_drop`` is derived, see below)
CHURN_FEATURES = ["tenure_days", "lifetime_value", "sessions_last_30d", "sessions_prev_30d",
                  "days_since_last_login", "support_tickets_30d", "engagement_drop"]

COUNTRIES = np.array(["US", "GB", "DE", "FR", "ES", "IT", "CA", "JP"])
COUNTRY_P = np.array([0.34, 0.14, 0.13, 0.10, 0.07, 0.07, 0.08, 0.07])
MARKETPLACE_OF = np.array(["US", "UK", "EU", "EU", "EU", "EU", "CA", "JP"])
PLANS = np.array(["basic", "standard", "premium"])
PLAN_P = np.array([0.5, 0.35, 0.15])
PLAN_PRICE = np.array([9.99, 19.99, 39.99])
CHURN_REASONS = np.array(["price", "support", "product", "moved"])
CHURN_REASON_P = np.array([0.38, 0.24, 0.24, 0.14])
CATEGORIES = np.array(["electronics", "home", "fashion", "beauty", "sports", "books", "toys", "garden"])
CATEGORY_PRICE = np.array([180.0, 60.0, 45.0, 25.0, 55.0, 15.0, 30.0, 40.0])
CLOSED_SHARE = 0.15
PRODUCTS = 400

#: rows of churned_customers.csv that are bad on purpose, to show quarantine; one per
#: 50 good rows at most, so that a small demo stays under the program's max_bad_share
BAD_CHURN_ROWS: list[dict[str, str | None]] = [
    {"customer_id": "C900001", "churned_at": "not-a-date", "lifetime_value": "812.50"},
    {"customer_id": "", "churned_at": None, "lifetime_value": "990.00"},
    {"customer_id": "C900003", "churned_at": None, "lifetime_value": "unknown"},
    {"customer_id": "C900004", "churned_at": "2024-13-45", "lifetime_value": "640.00"},
]
BAD_ROWS_EVERY = 50


@dataclass
class _Customers:
    """Engagement columns for ``n`` customers, as numpy arrays (codes for categories)."""

    country: np.ndarray
    plan: np.ndarray
    tenure_days: np.ndarray
    lifetime_value: np.ndarray
    sessions_last_30d: np.ndarray
    sessions_prev_30d: np.ndarray
    days_since_last_login: np.ndarray
    support_tickets_30d: np.ndarray


def customer_ids(start: int, n: int) -> np.ndarray:
    """``C000123``-style ids for ``start .. start + n - 1``."""
    return np.char.add("C", np.char.zfill(np.arange(start, start + n).astype(str), 6))


def engagement_drop(last: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """Share of the previous month's sessions lost; the churn program's feature
    ``(sessions_prev_30d - sessions_last_30d) / greatest(sessions_prev_30d, 1)``."""
    return (prev - last) / np.maximum(prev, 1)


def _customers(rng: np.random.Generator, n: int) -> _Customers:
    country = rng.choice(len(COUNTRIES), n, p=COUNTRY_P)
    plan = rng.choice(len(PLANS), n, p=PLAN_P)
    tenure = np.minimum(rng.gamma(1.6, 280.0, n).astype(np.int64) + 14, 3650)
    activity = rng.lognormal(np.log(10.0), 0.6, n) * np.array([1.0, 1.2, 1.5])[plan]
    declining = rng.random(n) < 0.3
    trend = np.where(declining, rng.beta(1.5, 3.0, n), rng.lognormal(0.0, 0.2, n))
    prev = rng.poisson(activity)
    last = rng.poisson(activity * trend)
    # active users logged in recently: the fewer sessions, the longer ago
    recent = np.floor(rng.random(n) * np.minimum(30.0, 45.0 / (last + 1.0))).astype(np.int64)
    idle = 30 + np.minimum(rng.geometric(1 / 15, n), 90)
    days_since = np.where(last > 0, recent, idle)
    tickets = rng.poisson(0.15 + 0.7 * declining + 0.15 * (plan == 2))
    ltv = np.round(PLAN_PRICE[plan] * tenure / 30.0 * rng.lognormal(0.0, 0.25, n), 2)
    return _Customers(country, plan, tenure, ltv, last, prev, days_since, tickets)


def churn_probability(c: _Customers) -> np.ndarray:
    """The hidden truth: declining sessions, long absences and support tickets raise churn."""
    drop = np.clip(engagement_drop(c.sessions_last_30d, c.sessions_prev_30d), -1.0, 1.0)
    z = (-2.3 + 2.6 * drop + 0.05 * np.minimum(c.days_since_last_login, 60)
         + 0.55 * c.support_tickets_30d - 0.0008 * c.tenure_days - 0.03 * c.sessions_last_30d)
    return 1.0 / (1.0 + np.exp(-z))


def _feature_columns(c: _Customers) -> dict[str, np.ndarray]:
    return {
        "tenure_days": c.tenure_days,
        "lifetime_value": c.lifetime_value,
        "sessions_last_30d": c.sessions_last_30d,
        "sessions_prev_30d": c.sessions_prev_30d,
        "days_since_last_login": c.days_since_last_login,
        "support_tickets_30d": c.support_tickets_30d,
    }


def _dates(today: date, days_ago: np.ndarray) -> pa.Array:
    """``today - days_ago`` as an Arrow date32 array."""
    epoch_day = (today - date(1970, 1, 1)).days
    return pa.array((epoch_day - days_ago).astype(np.int32), pa.int32()).cast(pa.date32())


def _churned_table(rng: np.random.Generator, ids: np.ndarray, c: _Customers,
                   days_ago: np.ndarray, today: date) -> pa.Table:
    n = len(ids)
    good = pa.table({
        "customer_id": pa.array(ids, pa.string()),
        "churned_at": pc.cast(_dates(today, days_ago), pa.string()),
        "churn_reason": pa.array(CHURN_REASONS[rng.choice(len(CHURN_REASONS), n, p=CHURN_REASON_P)]),
        "lifetime_value": pc.cast(pa.array(c.lifetime_value), pa.string()),
        "months_subscribed": np.maximum(c.tenure_days // 30, 1),
        "last_plan_price": PLAN_PRICE[c.plan],
        "opened_last_campaign": rng.random(n) < 0.3,
    })
    rows = BAD_CHURN_ROWS[: n // BAD_ROWS_EVERY]
    bad = pa.table({
        "customer_id": pa.array([r["customer_id"] or None for r in rows], pa.string()),
        "churned_at": pa.array([r["churned_at"] or str(today) for r in rows], pa.string()),
        "churn_reason": pa.array(["price"] * len(rows), pa.string()),
        "lifetime_value": pa.array([r["lifetime_value"] for r in rows], pa.string()),
        "months_subscribed": pa.array([24] * len(rows), pa.int64()),
        "last_plan_price": pa.array([39.99] * len(rows), pa.float64()),
        "opened_last_campaign": pa.array([True] * len(rows), pa.bool_()),
    }).cast(good.schema)
    # the bad rows land at random places, as they would in an export
    table = pa.concat_tables([good, bad])
    return table.take(rng.permutation(table.num_rows))


def _product_views(rng: np.random.Generator, ids: np.ndarray,
                   marketplace: np.ndarray) -> pa.Table:
    category = rng.choice(len(CATEGORIES), PRODUCTS)
    price = np.round(CATEGORY_PRICE[category] * rng.lognormal(0.0, 0.5, PRODUCTS), 2)
    popularity = 1.0 / (np.arange(PRODUCTS) + 8.0)
    per_customer = 1 + rng.poisson(3.0, len(ids))
    who = np.repeat(np.arange(len(ids)), per_customer)
    what = rng.choice(PRODUCTS, len(who), p=popularity / popularity.sum())
    # one row per (customer, product): keep the first draw of a repeated pair
    _, first = np.unique(who * PRODUCTS + what, return_index=True)
    who, what = who[first], what[first]
    n = len(who)
    views = np.minimum(rng.geometric(0.35, n), 40)
    in_cart = rng.random(n) < 1.0 / (1.0 + np.exp(-(-2.6 + 0.35 * views)))
    bought = rng.random(n) < np.where(in_cart, 0.4, 0.03)
    return pa.table({
        "customer_id": pa.array(ids[who], pa.string()),
        "product_id": pa.array(np.char.add("P", np.char.zfill(what.astype(str), 5)), pa.string()),
        "category": pa.array(CATEGORIES[category[what]], pa.string()),
        "views_7d": views.astype(np.int64),
        "purchased": bought,
        "price": price[what],
        "added_to_cart": in_cart,
        "marketplace": pa.array(marketplace[who], pa.string()),
    })


def generate(data_dir: Path, customers: int = 20_000, seed: int = 7,
             today: date | None = None) -> dict[str, Path]:
    """Write the demo's four data files into ``data_dir``; return their paths by name.

    The same ``customers``, ``seed`` and ``today`` always give the same rows.
    """
    if customers < 1:
        raise ValueError("customers must be at least 1")
    today = today or datetime.now(UTC).date()
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    ids = customer_ids(1, customers)
    c = _customers(rng, customers)
    closed = rng.random(customers) < CLOSED_SHARE
    churn_days = rng.integers(1, 366, customers)
    # a closed account has no recent sessions and was last seen around when it churned
    c.sessions_last_30d = np.where(closed, 0, c.sessions_last_30d)
    c.days_since_last_login = np.where(closed, churn_days + rng.integers(0, 4, customers),
                                       c.days_since_last_login)
    marketplace = MARKETPLACE_OF[c.country]
    engagement = pa.table({
        "customer_id": pa.array(ids, pa.string()),
        "country": pa.array(COUNTRIES[c.country], pa.string()),
        "plan": pa.array(PLANS[c.plan], pa.string()),
        **_feature_columns(c),
        "status": pa.array(np.where(closed, "closed", "active"), pa.string()),
        "marketplace": pa.array(marketplace, pa.string()),
    })

    gone = _Customers(*(getattr(c, f)[closed] for f in _Customers.__dataclass_fields__))
    churned = _churned_table(rng, ids[closed], gone, churn_days[closed], today)
    views = _product_views(rng, ids[~closed], marketplace[~closed])

    history_c = _customers(rng, customers)
    label = rng.random(customers) < churn_probability(history_c)
    history = pa.table({
        "customer_id": pa.array(customer_ids(500_001, customers), pa.string()),
        "country": pa.array(COUNTRIES[history_c.country], pa.string()),
        "plan": pa.array(PLANS[history_c.plan], pa.string()),
        **_feature_columns(history_c),
        "churned": label,
    })

    paths = {name: data_dir / name for name in (ENGAGEMENT, CHURNED, PRODUCT_VIEWS, CHURN_HISTORY)}
    pq.write_table(engagement, paths[ENGAGEMENT])
    pacsv.write_csv(churned, paths[CHURNED])
    pq.write_table(views, paths[PRODUCT_VIEWS])
    pq.write_table(history, paths[CHURN_HISTORY])
    return {Path(name).stem: path for name, path in paths.items()}


def history_features(table: pa.Table) -> tuple[np.ndarray, list[str]]:
    """The churn model's feature matrix for a table with the engagement columns."""
    cols = {name: table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            for name in CHURN_FEATURES if name != "engagement_drop"}
    cols["engagement_drop"] = engagement_drop(cols["sessions_last_30d"], cols["sessions_prev_30d"])
    return np.column_stack([cols[name] for name in CHURN_FEATURES]), list(CHURN_FEATURES)
