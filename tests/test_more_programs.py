"""The other batch programs, end to end: review request (0), late-order credit (2),
appointment reminders (10, two risk tiers), KYC reminder chain (12), cross-sell (14),
community engagement (15) and user-generated content (16).

Each program runs from its real file in programs/, over hand-made rows written where
its source looks (the project folder is a temporary one): who gets the action, who
does not, and which filter or selection step stopped them, read from the funnel. A
last pair of tests runs every program on the generated demo data.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from ceap.delivery.delivery_config import DeliveryConfig
from ceap.delivery.model import Profile
from ceap.delivery.templates import TemplateRenderer
from ceap.demo import more_data
from ceap.model import Candidate, CandidateQuery
from ceap.plugin import PluginContext
from ceap.realtime.replay import ReplayConnector
from ceap.realtime.worker import Worker
from ceap.runtime import RunResult, run_program
from ceap.spec import load_program
from ceap.spec.program import ProgramSpec
from ceap.store import Store, open_store

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ROOT / "programs"
MORE_PROGRAMS = ("review_request", "late_order_credit", "appointment_reminder",
                 "appointment_reminder_high_risk", "kyc_reminder", "cross_sell", "community_engagement",
                 "user_generated_content")


@functools.cache
def now() -> datetime:
    """When these tests run: read once, by the first test that asks, never at import."""
    return datetime.now(UTC).replace(microsecond=0)


def today() -> date:
    return now().date()


# -- fixtures and helpers ------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    yield s
    s.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    return tmp_path


def spec_of(program: str) -> ProgramSpec:
    return load_program(PROGRAMS / f"{program}.yaml")


def run(program: str | ProgramSpec, project: Path, store: Store) -> RunResult:
    spec = spec_of(program) if isinstance(program, str) else program
    return run_program(spec, store, PluginContext(base_dir=project), now=now())


def candidates(store: Store, program: str) -> dict[str, Candidate]:
    found = store.candidates(CandidateQuery(program=program, limit=100_000))
    by_customer = {c.customer_id: c for c in found}
    assert len(by_customer) == len(found), "one candidate per customer"
    return by_customer


def days_ago(n: int) -> date:
    return today() - timedelta(days=n)


def at(delta: timedelta) -> str:
    """``now() + delta`` as the booking system writes it: UTC, to the second."""
    return (now() + delta).strftime("%Y-%m-%d %H:%M:%S")


def renderer() -> TemplateRenderer:
    config = DeliveryConfig.model_validate(
        {"templates": {"unsubscribe_url": "https://ceap.example/v1/unsubscribe"}})
    return TemplateRenderer(ROOT / "templates", config, secret="test-signing-secret-0123456789")


# -- 0: review request -----------------------------------------------------------
def order(order_id: str, customer: str, delivered_days_ago: int, *, reviewed: bool = False,
          asked_days_ago: int | None = None, value: float = 80.0, items: int = 2, reviews: int = 3,
          orders: int = 5, app: bool = True) -> dict[str, Any]:
    return {"order_id": order_id, "customer_id": customer, "delivered_at": days_ago(delivered_days_ago),
            "order_value": value, "items": items, "reviewed": reviewed,
            "last_review_request_at": None if asked_days_ago is None else days_ago(asked_days_ago),
            "reviews_written": reviews, "orders_12m": orders, "app_user": app, "marketplace": "US"}


def test_review_request_who_is_asked_and_why(project: Path, store: Store) -> None:
    pq.write_table(pa.Table.from_pylist([
        order("O1", "R_OK", 5),
        order("O2", "R_DAY_3", 3),
        order("O3", "R_DAY_10", 10),
        order("O4", "R_ASKED_LONG_AGO", 6, asked_days_ago=31),
        order("O5", "R_TOO_RECENT", 2),                       # not used it yet
        order("O6", "R_TOO_OLD", 11),                         # will not remember it
        order("O7", "R_REVIEWED", 5, reviewed=True),          # already did
        order("O8", "R_ASKED", 5, asked_days_ago=20),         # asked (about another order) 20 days ago
        order("O9", "R_ASKED_30", 7, asked_days_ago=30),      # 30 days ago is still "in 30 days"
        # qualifies, but a first-time buyer who never reviews and has no app: below the threshold
        order("O10", "R_UNLIKELY", 5, value=10.0, items=1, reviews=0, orders=1, app=False),
        # two orders to review: one request, for the one more likely to be reviewed
        order("O11", "R_TWO", 4, items=1),
        order("O12", "R_TWO", 8, items=4),
    ]), project / "data" / "delivered_orders.parquet")

    result = run("review_request", project, store)

    assert result.funnel.filters == {"delivered_3_to_10_days_ago": 2, "not_yet_reviewed": 1,
                                     "not_asked_in_30_days": 2}
    assert result.funnel.eligible == 7
    assert result.funnel.below_threshold == 1 and result.funnel.duplicate_customer == 1
    found = candidates(store, "review_request")
    assert set(found) == {"R_OK", "R_DAY_3", "R_DAY_10", "R_ASKED_LONG_AGO", "R_TWO"}
    assert found["R_TWO"].subject_id == "O12"
    ask = found["R_OK"]
    assert ask.action_type == "request" and ask.channels == ["email", "inapp"]
    assert spec_of("review_request").action.deliver == "fallback"  # e-mail, or in-app when it cannot
    assert ask.model == "likelihood_to_review_v1" and ask.score >= 0.15
    assert ask.subject_id == "O1" and ask.context == {"marketplace": "US"}
    assert ask.payload == {"review_url": "https://shop.example/reviews/new", "order_id": "O1",
                           "days_since_delivery": 5}
    email = renderer().render(ask, "email", Profile("default", "R_OK", email="r@example.com"))
    assert "https://shop.example/reviews/new?order=O1&rating=5" in email.body
    assert "rating=1" in (email.html or "") and "Unsubscribe" in email.body


# -- 2: proactive credit for late orders -------------------------------------------
def tracked(order_id: str, customer: str, promised_days_ago: int, *, status: str = "in_transit",
            ltv: float = 2500.0, value: float = 120.0, late_before: int = 0,
            credited: bool = False) -> dict[str, Any]:
    return {"order_id": order_id, "customer_id": customer, "carrier": "DHL",
            "shipped_at": days_ago(promised_days_ago + 3), "promised_at": days_ago(promised_days_ago),
            "delivered_at": days_ago(0) if status == "delivered" else None, "status": status,
            "order_value": value, "lifetime_value": ltv, "late_orders_12m": late_before,
            "credit_issued": credited, "marketplace": "US"}


def write_tracking(project: Path) -> None:
    pq.write_table(pa.Table.from_pylist([
        tracked("T1", "L_LATE", 8, late_before=2),
        tracked("T2", "L_DAY_5", 5, status="delayed"),
        tracked("T3", "L_DAY_4", 4),                        # late, not yet 5 days
        tracked("T4", "L_NOT_DUE", -2),                     # promised for the day after tomorrow
        tracked("T5", "L_ARRIVED", 9, status="delivered"),  # arrived (late): no credit now
        tracked("T6", "L_LOW_VALUE", 9, ltv=400.0),         # late, but not a high-value customer
        tracked("T7", "L_CREDITED", 12, credited=True),     # customer service already credited it
    ]), project / "data" / "order_tracking.parquet")


def test_late_order_credit_who_is_credited_and_why(project: Path, store: Store) -> None:
    write_tracking(project)
    result = run("late_order_credit", project, store)

    assert result.funnel.filters == {"not_delivered": 1, "five_plus_days_late": 2,
                                     "high_value_customer": 1, "not_already_credited": 1}
    found = candidates(store, "late_order_credit")
    assert set(found) == {"L_LATE", "L_DAY_5"}
    apology = found["L_LATE"]
    assert apology.action_type == "offer" and apology.channels == ["email"]
    assert apology.category == "transactional" and apology.model == "satisfaction_impact_v1"
    assert apology.subject_id == "T1"
    assert apology.payload == {"credit_amount": 20, "currency": "USD", "credit_code": "SORRY20",
                               "order_id": "T1", "days_late": 8, "carrier": "DHL",
                               "promised_at": days_ago(8).isoformat()}
    # the longer the delay and the more late orders before, the bigger the impact
    assert apology.score > found["L_DAY_5"].score
    email = renderer().render(apology, "email", None)
    assert "$20" in email.title and "8 days late" in email.body


def test_late_order_credit_budget_goes_to_the_biggest_impact(project: Path, store: Store) -> None:
    write_tracking(project)
    spec = spec_of("late_order_credit")
    budget = spec.model_copy(update={"selection": spec.selection.model_copy(update={"top_k": 1})})
    result = run(budget, project, store)
    assert result.funnel.eligible == 2 and result.funnel.over_top_k == 1
    assert set(candidates(store, "late_order_credit")) == {"L_LATE"}


# -- 10: appointment reminders, two risk tiers ---------------------------------------
def booking(booking_id: str, customer: str, in_hours: float, *, status: str = "booked",
            confirmed: bool = True, previous: int = 4, no_shows: int = 0,
            booked_days_before: int = 7) -> dict[str, Any]:
    when = timedelta(hours=in_hours)
    return {"booking_id": booking_id, "customer_id": customer, "service": "physiotherapy",
            "location": "Riverside", "appointment_at": at(when),
            "booked_at": at(when - timedelta(days=booked_days_before)), "status": status,
            "confirmed": str(confirmed).lower(), "previous_appointments": str(previous),
            "previous_no_shows": str(no_shows)}


def test_appointment_reminders_split_by_no_show_risk(project: Path, store: Store) -> None:
    pacsv.write_csv(pa.Table.from_pylist([
        booking("B1", "A_RELIABLE", 5),                                   # confirmed, always came
        booking("B2", "A_EDGE_24H", 24),                                  # exactly 24 h ahead: in
        booking("B3", "A_FLAKY", 20, confirmed=False, no_shows=2),        # missed 2 of 4, unconfirmed
        booking("B4", "A_NEW", 3, confirmed=False, previous=0, booked_days_before=60),
        booking("B5", "A_PAST", -1),                                      # an hour ago
        booking("B6", "A_DAY_AFTER", 24 + 1 / 60),                        # one minute too far
        booking("B7", "A_CANCELLED", 6, status="cancelled"),
    ]), project / "data" / "bookings.csv")

    low = run("appointment_reminder", project, store)
    high = run("appointment_reminder_high_risk", project, store)

    # the same rows reach the split; the lower tier stops the higher risks with a filter,
    # the higher tier the lower risks with its threshold
    assert low.funnel.filters == {"in_the_next_24_hours": 2, "still_booked": 1, "lower_no_show_risk": 2}
    assert high.funnel.filters == {"in_the_next_24_hours": 2, "still_booked": 1}
    assert high.funnel.eligible == 4 and high.funnel.below_threshold == 2
    sms_only = candidates(store, "appointment_reminder")
    both = candidates(store, "appointment_reminder_high_risk")
    assert set(sms_only) == {"A_RELIABLE", "A_EDGE_24H"}
    assert set(both) == {"A_FLAKY", "A_NEW"}
    assert all(c.score < 0.3 for c in sms_only.values()) and all(c.score >= 0.3 for c in both.values())
    assert all(c.channels == ["sms"] for c in sms_only.values())
    assert all(c.channels == ["sms", "email"] for c in both.values())
    assert spec_of("appointment_reminder_high_risk").action.deliver == "all"  # both at once

    flaky = both["A_FLAKY"]
    assert flaky.category == "transactional" and flaky.model == "no_show_risk_v1"
    assert flaky.subject_id == "B3" and flaky.payload["booking_id"] == "B3"
    assert flaky.payload["appointment_at"] == at(timedelta(hours=20))
    assert flaky.payload["hours_until"] == pytest.approx(20.0)
    assert flaky.expires_at - flaky.not_before == timedelta(hours=12)
    sms = renderer().render(sms_only["A_RELIABLE"], "sms", None)
    assert "https://book.example/calendar/B1.ics" in sms.body
    email = renderer().render(flaky, "email", None)
    assert "B3.ics" in email.body and "physiotherapy" in email.title


def test_appointment_tiers_share_everything_but_the_split() -> None:
    low, high = (yaml.safe_load((PROGRAMS / f"{n}.yaml").read_text())
                 for n in ("appointment_reminder", "appointment_reminder_high_risk"))
    for key in ("source", "features", "scorer", "schedule", "priority", "experiment"):
        assert low[key] == high[key], key
    split = low["filters"][-1]
    assert split["id"] == "lower_no_show_risk" and low["filters"][:-1] == high["filters"]
    assert split["expr"] == f"no_show_risk < {high['selection']['threshold']}"
    assert "threshold" not in low["selection"]
    assert {k: v for k, v in low["action"].items() if k not in ("channels", "deliver")} == \
        {k: v for k, v in high["action"].items() if k not in ("channels", "deliver")}


# -- 12: KYC reminder chain ------------------------------------------------------------
def account(customer: str, deadline_in: int, status: str = "not_started", *, missing: int = 2,
            kind: str = "personal", balance: float = 1800.0) -> dict[str, Any]:
    return {"customer_id": customer, "account_type": kind,
            "opened_at": today() - timedelta(days=30 - deadline_in), "kyc_status": status,
            "kyc_deadline": today() + timedelta(days=deadline_in),
            "kyc_completed_at": today() if status == "complete" else None,
            "documents_missing": missing if status != "complete" else 0, "balance": balance}


def write_accounts(project: Path) -> None:
    pacsv.write_csv(pa.Table.from_pylist([
        account("K_NOT_STARTED", 7),
        account("K_DOCUMENTS", 7, "documents_requested", missing=1, kind="business", balance=40_000.0),
        account("K_UNDER_REVIEW", 7, "under_review", missing=0),        # waiting on us, not on them
        account("K_COMPLETE", 7, "complete"),
        account("K_8_DAYS", 8),                                          # tomorrow's run starts theirs
        account("K_6_DAYS", 6),                                          # yesterday's run started theirs
    ]), project / "data" / "kyc_accounts.csv")


def chain(store: Store, customer: str) -> list[tuple[timedelta, list[str], str]]:
    steps = store.candidates(CandidateQuery(program="kyc_reminder", customer_id=customer, limit=10,
                                            include_expired=True))
    return sorted((c.not_before - now(), c.channels, c.status) for c in steps)


def test_kyc_reminder_creates_an_escalating_chain(project: Path, store: Store) -> None:
    write_accounts(project)
    result = run("kyc_reminder", project, store)

    assert result.funnel.filters == {"kyc_incomplete": 2, "deadline_in_7_days": 2}
    assert result.funnel.selected == 2 and result.funnel.below_threshold == 0
    assert result.written is not None and result.written.inserted == 6  # 2 chains of 3 steps
    for customer in ("K_NOT_STARTED", "K_DOCUMENTS"):
        assert chain(store, customer) == [(timedelta(0), ["email"], "pending"),
                                          (timedelta(days=3), ["sms"], "pending"),
                                          (timedelta(days=6), ["inapp"], "pending")]
    steps = store.candidates(CandidateQuery(program="kyc_reminder", customer_id="K_DOCUMENTS", limit=10,
                                            include_expired=True))
    first = min(steps, key=lambda c: c.not_before)
    assert sorted(c.dedup_key for c in steps) == [first.dedup_key, f"{first.dedup_key}:e1",
                                                  f"{first.dedup_key}:e2"]
    assert all(c.expires_at - c.not_before == timedelta(days=1) for c in steps)
    # the banner is up the day before the deadline, and gone when it passes
    banner = max(steps, key=lambda c: c.not_before)
    assert banner.expires_at.date() == today() + timedelta(days=7)
    assert first.category == "transactional" and first.action_type == "alert"
    assert first.payload == {"verify_url": "https://bank.example/verify",
                             "kyc_deadline": (today() + timedelta(days=7)).isoformat(),
                             "kyc_status": "documents_requested", "documents_missing": 1,
                             "account_type": "business"}
    # a business account with a large balance is more urgent than a personal one
    assert first.score > chain_head(store, "K_NOT_STARTED").score
    # every step renders on its channel
    r = renderer()
    assert "1 document still to upload" in r.render(first, "email", None).body
    assert "https://bank.example/verify" in r.render(first, "sms", None).body
    assert "Verify your identity by" in r.render(banner, "inapp", None).title

    again = run("kyc_reminder", project, store)
    assert again.written is not None
    assert again.written.inserted == 0 and again.written.duplicates == 6  # no second chain


def chain_head(store: Store, customer: str) -> Candidate:
    steps = store.candidates(CandidateQuery(program="kyc_reminder", customer_id=customer, limit=10,
                                            include_expired=True))
    return min(steps, key=lambda c: c.not_before)


def test_kyc_chain_stops_once_kyc_is_completed(project: Path, store: Store) -> None:
    write_accounts(project)
    run("kyc_reminder", project, store)
    # the e-mail of K_NOT_STARTED went out; then, a day later, they completed KYC
    with store.tx() as tx:
        tx.execute("UPDATE candidates SET status = 'sent' WHERE customer_id = ? AND channels = ?",
                   ("K_NOT_STARTED", json.dumps(["email"])))
    (project / "programs").mkdir()
    (project / "programs" / "kyc_reminder.yaml").write_text((PROGRAMS / "kyc_reminder.yaml").read_text())
    events = [{"id": "e1", "customer_id": "K_NOT_STARTED", "type": "kyc_completed",
               "ts": (now() + timedelta(days=1)).isoformat(), "attributes": {}},
              {"id": "e2", "customer_id": "K_DOCUMENTS", "type": "document_uploaded",
               "ts": (now() + timedelta(days=1)).isoformat(), "attributes": {}}]
    (project / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events))
    context = PluginContext(base_dir=project, store=store)
    source = ReplayConnector.from_dict({"type": "replay", "path": "events.jsonl"}, context)
    worker = Worker(store, source, project / "programs", context, batch=10)
    try:
        worker.run(until_idle=True)
    finally:
        worker.close()

    assert chain(store, "K_NOT_STARTED") == [(timedelta(0), ["email"], "sent"),
                                             (timedelta(days=3), ["sms"], "cancelled"),
                                             (timedelta(days=6), ["inapp"], "cancelled")]
    # another event is not the goal: their chain goes on
    assert [s for _, _, s in chain(store, "K_DOCUMENTS")] == ["pending"] * 3
    with store.tx() as tx:
        reasons = tx.execute("SELECT DISTINCT status_reason FROM candidates WHERE status = 'cancelled'"
                             ).fetchall()
    assert [r[0] for r in reasons] == ["cancelled by kyc_completed event e1"]


# -- 14: cross-sell from the co-purchase table ------------------------------------------
def rec(product: str, name: str, price: float, affinity: float) -> dict[str, Any]:
    return {"product_id": product, "name": name, "price": price, "affinity": affinity}


CAMERA_RECS = [rec("P-SDC", "128 GB SD card", 29.0, 0.55),
               rec("P-LENS", "50 mm f/1.8 prime lens", 249.0, 0.45),
               rec("P-CBAT", "Spare camera battery", 45.0, 0.3)]


def purchase(customer: str, product: str, name: str, bought_days_ago: int, affinity: float | None,
             recommendations: list[dict[str, Any]], *, price: float = 899.0,
             clicks: int = 2) -> dict[str, Any]:
    return {"order_id": f"R-{customer}-{product}", "customer_id": customer, "product_id": product,
            "product_name": name, "price": price, "purchased_at": days_ago(bought_days_ago),
            "affinity": affinity, "recommendations": recommendations, "email_clicks_90d": clicks,
            "marketplace": "EU"}


def test_cross_sell_who_gets_recommendations_and_why(project: Path, store: Store) -> None:
    recs_type = pa.list_(pa.struct([("product_id", pa.string()), ("name", pa.string()),
                                    ("price", pa.float64()), ("affinity", pa.float64())]))
    rows = [
        purchase("X_CAMERA", "P-CAM", "Mirrorless camera M50", 1, 0.55, CAMERA_RECS),
        # the same customer's other purchase yesterday: one e-mail, about the camera
        purchase("X_CAMERA", "P-CASE", "Phone case", 1, 0.3, [rec("P-GLASS", "Screen protector", 15.0, 0.3)],
                 price=25.0),
        purchase("X_TWO_DAYS", "P-CAM", "Mirrorless camera M50", 2, 0.55, CAMERA_RECS),
        purchase("X_TODAY", "P-CAM", "Mirrorless camera M50", 0, 0.55, CAMERA_RECS),
        purchase("X_OWNS_IT_ALL", "P-RUN", "Running shoes", 1, None, [], price=129.0),  # nothing left to add
        purchase("X_WEAK", "P-BOOK", "Paperback novel", 1, 0.05, [rec("P-TEE", "Cotton T-shirt", 19.0, 0.05)],
                 price=12.0),
        # a real affinity, but a cheap item and a customer who never clicks: below the threshold
        purchase("X_UNLIKELY", "P-DESC", "Descaler", 1, 0.12,
                 [rec("P-BEANS", "Espresso beans 1 kg", 18.0, 0.12)], price=12.0, clicks=0),
    ]
    schema = pa.Table.from_pylist(rows[:1]).schema
    schema = schema.set(schema.get_field_index("recommendations"), pa.field("recommendations", recs_type))
    schema = schema.set(schema.get_field_index("affinity"), pa.field("affinity", pa.float64()))
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), project / "data" / "recent_purchases.parquet")

    result = run("cross_sell", project, store)

    assert result.funnel.filters == {"bought_yesterday": 2, "has_accessories_to_recommend": 2}
    assert result.funnel.eligible == 3
    assert result.funnel.below_threshold == 1 and result.funnel.duplicate_customer == 1
    found = candidates(store, "cross_sell")
    assert set(found) == {"X_CAMERA"}
    mail = found["X_CAMERA"]
    assert mail.subject_id == "P-CAM" and mail.action_type == "recommend" and mail.channels == ["email"]
    assert mail.model == "co_purchase_affinity_v1" and mail.context == {"marketplace": "EU"}
    assert mail.payload == {"shop_url": "https://shop.example/p", "product_id": "P-CAM",
                            "product_name": "Mirrorless camera M50", "recommendations": CAMERA_RECS}
    email = renderer().render(mail, "email", None)
    assert "Mirrorless camera M50" in email.title
    assert "50 mm f/1.8 prime lens" in email.body and "https://shop.example/p/P-LENS" in email.body


def test_co_purchase_table_measures_confidence_and_lift() -> None:
    products = np.array(["CAM", "LENS", "BOOK"])
    held = np.array([[1, 1, 0]] * 6 + [[1, 0, 0]] * 4 + [[0, 0, 1]] * 10 + [[0, 1, 1]] * 2, dtype=bool)
    table = more_data.co_purchase_table(held, products)
    pairs = {(r["product_a"], r["product_b"]): r for r in table.to_pylist()}
    assert set(pairs) == {("CAM", "LENS"), ("LENS", "CAM")}  # 2 lens+book orders are too few (< 5)
    lens = pairs[("CAM", "LENS")]
    assert lens["together"] == 6 and lens["confidence"] == pytest.approx(0.6)  # 6 of 10 camera orders
    assert lens["lift"] == pytest.approx(0.6 / (8 / 22), abs=1e-3)
    assert pairs[("LENS", "CAM")]["confidence"] == pytest.approx(0.75)     # 6 of 8 lens orders


# -- 15 and 16: community engagement and user-generated content ----------------------------
def member(customer: str, *, visits: int = 8, reactions: int = 5, comments: int = 1, posts: int = 0,
           words: float = 20.0, likes: float = 0.5, topics: int = 2,
           topic: str = "photography") -> dict[str, Any]:
    return {"customer_id": customer, "member_since": days_ago(200), "visits_30d": visits,
            "reactions_30d": reactions, "comments_30d": comments, "posts_total": posts,
            "avg_comment_words": words, "likes_per_comment": likes, "topics_followed": topics,
            "favourite_topic": topic,
            "trending": [{"title": t, "url": f"https://community.shop.example/t/{i}", "replies": r}
                         for i, (t, r) in enumerate(more_data.TRENDING[topic])]}


def test_community_and_user_generated_content_split_the_members(project: Path, store: Store) -> None:
    pq.write_table(pa.Table.from_pylist([
        member("M_LURKER", topic="coffee"),                    # reads and reacts, never wrote
        member("M_POSTER", posts=3),                           # already posts: neither program
        member("M_DORMANT", visits=0, reactions=0),            # not around to read an e-mail about it
        member("M_QUIET", visits=1, reactions=0, comments=0, topics=1),  # little engagement potential
        # comments often, never posted: the "share your story" prompt, not the e-mail
        member("M_STORYTELLER", comments=12, words=60.0, likes=3.0),
        member("M_TERSE", comments=6, words=5.0, likes=0.1),   # comments often, but short and unliked
        member("M_RARE_COMMENTER", comments=2, visits=1, reactions=0, topics=1, likes=4.0, words=80.0),
        member("M_PROLIFIC_POSTER", comments=15, posts=2, words=70.0, likes=4.0),
    ]), project / "data" / "community_activity.parquet")

    community = run("community_engagement", project, store)
    ugc = run("user_generated_content", project, store)

    assert community.funnel.filters == {"no_posts_yet": 2, "visited_in_30_days": 1,
                                        "not_a_frequent_commenter": 2}
    assert community.funnel.eligible == 3 and community.funnel.below_threshold == 2
    assert ugc.funnel.filters == {"never_posted": 2, "comments_often": 4}
    assert ugc.funnel.eligible == 2 and ugc.funnel.below_threshold == 1
    emails, prompts = candidates(store, "community_engagement"), candidates(store, "user_generated_content")
    assert set(emails) == {"M_LURKER"}
    assert set(prompts) == {"M_STORYTELLER"}

    lurker = emails["M_LURKER"]
    assert lurker.action_type == "recommend" and lurker.channels == ["email"]
    assert lurker.model == "engagement_potential_v1"
    assert lurker.payload["favourite_topic"] == "coffee"
    assert [t["title"] for t in lurker.payload["trending"]] == [t for t, _ in more_data.TRENDING["coffee"]]
    email = renderer().render(lurker, "email", None)
    assert "Trending in coffee" in email.title and "Dialling in a new grinder" in email.body

    story = prompts["M_STORYTELLER"]
    assert story.action_type == "request" and story.channels == ["inapp"]
    assert story.model == "content_quality_potential_v1"
    assert story.payload == {"new_post_url": "https://community.shop.example/new?prompt=story",
                             "favourite_topic": "photography", "comments_30d": 12}
    banner = renderer().render(story, "inapp", None)
    assert "share your story" in banner.title and "12 times" in banner.body


# -- the generator, and every program on its data ---------------------------------------------
def test_generate_more_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    first = more_data.generate_more(tmp_path / "a", customers=600, seed=11, today=today())
    second = more_data.generate_more(tmp_path / "b", customers=600, seed=11, today=today())
    other = more_data.generate_more(tmp_path / "c", customers=600, seed=12, today=today())
    assert sorted(first) == sorted(Path(n).stem for n in more_data.FILES)
    for name, path in first.items():
        assert path.read_bytes() == second[name].read_bytes(), name
        assert path.read_bytes() != other[name].read_bytes(), name
    with pytest.raises(ValueError):
        more_data.generate_more(tmp_path / "d", customers=0)


def test_every_program_selects_someone_on_generated_data(tmp_path: Path, store: Store) -> None:
    paths = more_data.generate_more(tmp_path / "data", customers=2_000, seed=7, today=today())
    results = {name: run(name, tmp_path, store) for name in MORE_PROGRAMS}

    for name, result in results.items():
        assert result.ok, (name, result.error)
        assert result.funnel.selected > 0, name
        assert result.funnel.held_out < result.funnel.selected, name
    # the bad booking rows are quarantined, with their reasons, by both tiers
    for name in ("appointment_reminder", "appointment_reminder_high_risk"):
        result = results[name]
        assert result.funnel.quarantined == len(more_data.BAD_BOOKING_ROWS)
        assert dict(result.funnel.quarantine_reasons) == {
            "column appointment_at: not a valid timestamp": 2, "customer id (customer_id) is missing": 1,
            "column previous_no_shows: not a valid int": 1}
    low, high = candidates(store, "appointment_reminder"), candidates(store, "appointment_reminder_high_risk")
    assert not set(low) & set(high), "one reminder per booking, from one tier"
    eligible = results["appointment_reminder_high_risk"].funnel.eligible
    assert len(low) + len(high) == eligible, "every eligible booking gets a reminder"
    # a KYC chain of three steps per selected account
    kyc = results["kyc_reminder"]
    assert kyc.written is not None and kyc.written.inserted == 3 * kyc.funnel.selected
    # the rules hold for every candidate
    orders = {r["order_id"]: r for r in pq.read_table(paths["delivered_orders"]).to_pylist()}
    for c in candidates(store, "review_request").values():
        row = orders[c.subject_id]
        assert 3 <= (today() - row["delivered_at"]).days <= 10 and not row["reviewed"]
        asked = row["last_review_request_at"]
        assert asked is None or (today() - asked).days > 30
    tracking = {r["order_id"]: r for r in pq.read_table(paths["order_tracking"]).to_pylist()}
    for c in candidates(store, "late_order_credit").values():
        row = tracking[c.subject_id]
        assert row["status"] != "delivered" and row["lifetime_value"] >= 1000 and not row["credit_issued"]
        assert (today() - row["promised_at"]).days >= 5
    bought = {(r["customer_id"], r["product_id"]): r
              for r in pq.read_table(paths["recent_purchases"]).to_pylist()}
    for c in candidates(store, "cross_sell").values():
        row = bought[(c.customer_id, c.subject_id)]
        assert row["purchased_at"] == today() - timedelta(days=1) and row["affinity"] >= 0.1
        assert c.payload["recommendations"] == row["recommendations"]
        assert c.subject_id not in {r["product_id"] for r in row["recommendations"]}
