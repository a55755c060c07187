"""`ceap report uplift` counts, per arm, the customers an open or a click of one of their
deliveries was recorded for (reported through `POST /v1/engagements`, events, the pixel or
tracked links), once per customer, and prints the treated customers' open and click rates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ceap.experiments.uplift import uplift_report
from ceap.model import RunRecord
from ceap.store import Store
from ceap.testing import make_candidates
from tests.experiment_helpers import add_engagements, candidate_ids


def test_opens_and_clicks_are_counted_per_customer_and_arm(store: Store) -> None:
    now = datetime.now(UTC)
    arms = ["treatment"] * 6 + ["holdout"] * 2
    store.write_run(RunRecord("r1", "default", "promo", "succeeded", now - timedelta(hours=1)),
                    make_candidates(8, program="promo", run_id="r1", customer_id=lambda i: f"u{i}",
                                    arm=lambda i: arms[i], holdout=lambda i: arms[i] != "treatment",
                                    dedup_key=lambda i: f"promo:u{i}", subject_id=None))
    ids = {c.customer_id: c.id for c in candidate_ids(store, "promo").values()}
    add_engagements(store, [
        ("default", ids["u0"], "promo", "u0", "opened"),
        ("default", ids["u0"], "promo", "u0", "clicked"),
        ("default", ids["u0"], "promo", "u0", "clicked"),   # a second link: one customer still
        ("default", ids["u1"], "promo", "u1", "opened"),
        ("default", ids["u2"], "promo", "u2", "unsubscribed"),
        ("default", None, "other", "u3", "opened"),            # another program's
    ], now)
    report = uplift_report(store, "default", "promo", now)
    treated, holdout = report.arms["treatment"], report.arms["holdout"]
    assert (treated.customers, treated.opened, treated.clicked, treated.unsubscribed) == (6, 2, 1, 1)
    assert (holdout.opened, holdout.clicked) == (0, 0)
    assert report.to_dict()["arms"]["treatment"]["opened"] == 2


def test_the_cli_prints_the_treated_customers_open_and_click_rates(store: Store) -> None:
    from rich.console import Console

    from ceap.cli import experiments as cli

    now = datetime.now(UTC)
    store.write_run(RunRecord("r1", "default", "promo", "succeeded", now - timedelta(hours=1)),
                    make_candidates(4, program="promo", run_id="r1", customer_id=lambda i: f"u{i}",
                                    arm="treatment", holdout=False, dedup_key=lambda i: f"promo:u{i}",
                                    subject_id=None))
    ids = {c.customer_id: c.id for c in candidate_ids(store, "promo").values()}
    add_engagements(store, [("default", ids["u0"], "promo", "u0", "opened"),
                            ("default", ids["u1"], "promo", "u1", "opened"),
                            ("default", ids["u1"], "promo", "u1", "clicked")], now)
    console = Console(record=True, width=200)
    original = cli.out
    cli.out = console
    try:
        cli.print_uplift(uplift_report(store, "default", "promo", now))
    finally:
        cli.out = original
    text = console.export_text()
    assert "engagement of treated customers: opened 2 of 4 (50.00%), clicked 1 (25.00%)" in text
