"""The simulator on the real platform: a small experiment end to end on SQLite and
PostgreSQL, its report against an independent computation (pandas and statsmodels
on the raw rows), the estimate against the known truth, attribution against the
simulated purchases, replays, e-mail engagement through the tracking endpoints,
the bandit learning from simulated outcomes, and the truth of the world itself."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats as scipy_stats
from statsmodels.stats import proportion
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from ceap.experiments.uplift import UpliftReport
from ceap.simulate.design import Design
from ceap.simulate.experiment import START, Simulation, run_experiment
from ceap.simulate.population import SEGMENTS, Arm, World, baseline, treated
from ceap.simulate.responses import caused
from ceap.store import Store

#: one world for the module: the superpopulation every test samples from
WORLD = World(size=50_000, seed=3)
#: a large effect: in-app offers three and four times the default strength
STRONG = Design(name="offer", arms=(Arm("a", "inapp", lift=3.0), Arm("b", "inapp", lift=4.0, weight=2)),
                holdout=0.4)


def raw(store: Store, program: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    with store.tx() as tx:
        cands = pd.DataFrame([tuple(r) for r in tx.execute(
            "SELECT id, customer_id, arm, variant FROM candidates WHERE program = ?",
            (program,)).fetchall()], columns=["id", "customer_id", "arm", "variant"])
        convs = pd.DataFrame([tuple(r) for r in tx.execute(
            "SELECT candidate_id, value FROM conversions WHERE program = ?", (program,)).fetchall()],
            columns=["candidate_id", "value"])
    return cands, convs


def per_customer(cands: pd.DataFrame, convs: pd.DataFrame) -> pd.DataFrame:
    """One row per customer: the arm and variant of the first candidate, converted, value."""
    first = cands.sort_values("id").groupby("customer_id").first()
    owned = convs.merge(cands[["id", "customer_id"]], left_on="candidate_id", right_on="id")
    got = owned.groupby("customer_id")["value"].agg(["count", "sum"])
    out = first.join(got, how="left").fillna({"count": 0, "sum": 0.0})
    out["converted"] = out["count"] > 0
    return out.rename(columns={"sum": "value"})


def check_comparison(report_row: Any, t: pd.DataFrame, c: pd.DataFrame) -> None:
    """The report's comparison against statsmodels on the raw rows."""
    nt, kt, nc, kc = len(t), int(t["converted"].sum()), len(c), int(c["converted"].sum())
    assert (report_row.treated.customers, report_row.treated.converted) == (nt, kt)
    assert (report_row.control.customers, report_row.control.converted) == (nc, kc)
    assert report_row.treated.rate_ci == pytest.approx(
        proportion.proportion_confint(kt, nt, method="wilson"))
    assert report_row.absolute_uplift == pytest.approx(kt / nt - kc / nc)
    assert report_row.absolute_ci == pytest.approx(proportion.confint_proportions_2indep(
        kt, nt, kc, nc, method="newcomb", compare="diff"))
    assert report_row.p_value == pytest.approx(proportion.test_proportions_2indep(
        kt, nt, kc, nc, method="score", compare="diff").pvalue, abs=1e-12)
    low, high = proportion.confint_proportions_2indep(kt, nt, kc, nc, method="score", compare="ratio")
    assert report_row.relative_ci == pytest.approx((low - 1, high - 1))
    means = CompareMeans(DescrStatsW(t["value"].to_numpy()), DescrStatsW(c["value"].to_numpy()))
    assert report_row.value_difference == pytest.approx(t["value"].mean() - c["value"].mean())
    assert report_row.value_ci == pytest.approx(means.tconfint_diff(usevar="unequal"))
    assert report_row.value_p_value == pytest.approx(means.ttest_ind(usevar="unequal")[1])
    # the same difference of rates from a linear probability model (another method)
    both = pd.concat([t.assign(treated=1), c.assign(treated=0)])
    ols = smf.ols("converted ~ treated", data=both.assign(converted=both["converted"].astype(float))).fit()
    assert ols.params["treated"] == pytest.approx(report_row.absolute_uplift)


def test_report_of_a_simulated_experiment_matches_an_independent_computation(
        store_url: str, tmp_path: Path) -> None:
    result = run_experiment(WORLD, STRONG, tmp_path, seed=11, customers=1500, store_url=store_url,
                            by="variant")
    report, done = result.report, result.round
    assert done.unexpected_contacts == 0  # the platform reached exactly the reachable treated
    from ceap.store import open_store

    store = open_store(store_url)
    try:
        cands, convs = raw(store, "offer")
        with store.tx() as tx:
            attributed = {int(r[0]) for r in tx.execute(
                "SELECT candidate_id FROM conversions WHERE program = 'offer'").fetchall()}
            goal_events = tx.execute("SELECT count(*) FROM goal_events").fetchone()[0]
            engaged = dict(tx.execute("SELECT type, count(*) FROM engagements GROUP BY type").fetchall())
    finally:
        store.close()
    # attribution converted exactly the customers whose simulated purchase fell in their
    # window; the purchases before the touch and after the window converted nobody
    drawn = set(done.contacts.candidate_id[done.outcomes.converted].tolist())
    assert attributed == drawn and result.attributed == len(drawn)
    assert goal_events == len(done.outcomes.goal_events) > len(drawn)
    effect = caused(done.outcomes)  # the counterfactual: nothing caused without a message
    assert not effect[~done.outcomes.contacted].any() and effect[done.outcomes.contacted].sum() > 0
    reported = {"open": "read", "click": "clicked", "unsubscribe": "unsubscribed"}
    for kind, name in reported.items():
        assert engaged.get(name, 0) == sum(e.kind == kind for e in done.outcomes.engagements)
    customers = per_customer(cands, convs)
    treated_rows = customers[customers["arm"] == "treatment"]
    control_rows = customers[customers["arm"] == "holdout"]
    [main] = report.comparisons
    check_comparison(main, treated_rows, control_rows)
    assert report.arms["treatment"].value == pytest.approx(treated_rows["value"].sum())
    groups = {g.label: g for g in report.groups}
    assert set(groups) == {"a", "b"}
    for name, group in groups.items():  # fixed weights: each variant against the whole holdout
        check_comparison(group, treated_rows[treated_rows["variant"] == name], control_rows)
    # the known truth: a large effect, measured within its interval and significant
    assert main.absolute_ci is not None and main.p_value is not None
    assert main.absolute_ci[0] <= result.truth <= main.absolute_ci[1]
    assert abs(main.absolute_uplift - result.truth) < (main.absolute_ci[1] - main.absolute_ci[0]) / 2
    assert result.truth > 0.1 and main.p_value < 1e-6 and not main.small_sample


def test_replaying_every_event_attributes_nothing_twice(store_url: str, tmp_path: Path) -> None:
    sim = Simulation(WORLD, STRONG, tmp_path, seed=5, store_url=store_url)
    try:
        done = sim.round(400)
        first = sim.platform.attribute(sim.settle())
        before = counts(sim.platform.store)
        report = sim.platform.report(sim.settle())
        assert sim.replay(done) == len(done.sent) > 0  # the API accepted them all again
        again = sim.platform.attribute(sim.settle() + timedelta(days=1))
        assert first.inserted > 0 and again.inserted == 0
        assert counts(sim.platform.store) == before
        assert numbers(sim.platform.report(sim.settle())) == numbers(report)
    finally:
        sim.close()


def counts(store: Store) -> dict[str, int]:
    with store.tx() as tx:
        return {t: int(tx.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                for t in ("goal_events", "conversions", "engagements", "candidates", "deliveries")}


def numbers(report: UpliftReport) -> list[Any]:
    return [(c.treated.converted, c.control.converted, c.absolute_uplift, c.absolute_ci)
            for c in report.comparisons]


def test_email_readers_open_click_and_unsubscribe_through_the_tracking_endpoints(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEAP_SIGNING_SECRET", "a-signing-secret-for-tests-only")
    design = Design(name="mail_offer", arms=(Arm("a", "email", lift=2.0), Arm("b", "inapp", lift=2.0)),
                    holdout=0.2, template="mail_offer")
    sim = Simulation(WORLD, design, tmp_path, seed=9, store_url=f"sqlite:///{tmp_path / 'ceap.db'}")
    try:
        done = sim.round(400)
        assert sim.platform.mailbox is not None
        mailed = [e for e in done.outcomes.engagements if e.channel == "email"]
        expected = {"open 200": sum(e.kind == "open" for e in mailed),
                    "click 302": sum(e.kind == "click" for e in mailed),
                    "unsubscribe 200": sum(e.kind == "unsubscribe" for e in mailed)}
        assert done.followed == {k: v for k, v in expected.items() if v}
        assert expected["open 200"] > 20 and expected["click 302"] > 5
        with sim.platform.store.tx() as tx:
            by_source = dict(tx.execute("SELECT source || ':' || type, count(*) FROM engagements "
                                        "WHERE channel = 'email' GROUP BY 1").fetchall())
            revoked = {r[0] for r in tx.execute(
                "SELECT customer_id FROM consent WHERE granted = 0 AND channel = 'email'").fetchall()}
            sent = tx.execute("SELECT count(*) FROM deliveries WHERE channel = 'email' "
                              "AND status = 'sent'").fetchone()[0]
        assert by_source.get("pixel:opened", 0) == expected["open 200"]
        assert by_source.get("link:clicked", 0) == expected["click 302"]
        assert revoked == {e.customer_id for e in mailed if e.kind == "unsubscribe"}
        assert sent == len(sim.platform.mailbox) and done.unexpected_contacts == 0
    finally:
        sim.close()


def test_the_bandit_moves_to_the_better_variant_on_simulated_outcomes(tmp_path: Path) -> None:
    design = Design(name="promo", arms=(Arm("weak", "inapp", lift=0.2), Arm("strong", "inapp", lift=4.0)),
                    holdout=0.1, bandit={"min_share": 0.05})
    sim = Simulation(WORLD, design, tmp_path, seed=2, store_url=f"sqlite:///{tmp_path / 'ceap.db'}")
    try:
        rounds = [sim.round(600) for _ in range(3)]
    finally:
        sim.close()
    assert rounds[0].shares is None  # no outcome yet: the variants' weights
    first, last = (r.treated_by_variant(design) for r in (rounds[0], rounds[2]))
    assert abs(first["strong"] / sum(first.values()) - 0.5) < 0.07
    assert rounds[2].shares is not None and rounds[2].shares["strong"] > 0.9
    assert last["strong"] / sum(last.values()) > 0.85
    assert all(r.at == START + i * (design.within + timedelta(days=4)) for i, r in enumerate(rounds))


def test_the_world_separates_who_buys_from_whom_a_message_moves() -> None:
    arm = Arm("a", "email")
    effect = WORLD.effect(arm)
    by_segment = {s: (WORLD.p0[WORLD.segment == i].mean(), effect[WORLD.segment == i].mean())
                  for i, s in enumerate(SEGMENTS)}
    assert by_segment["sure_thing"][0] == max(p for p, _ in by_segment.values())
    assert by_segment["persuadable"][1] == max(e for _, e in by_segment.values())
    assert by_segment["persuadable"][0] < by_segment["sure_thing"][0] / 5
    assert by_segment["sleeping_dog"][1] < 0 < by_segment["sure_thing"][1] < by_segment["persuadable"][1] / 5
    assert scipy_stats.spearmanr(WORLD.p0, effect).statistic < -0.2
    # the intention-to-treat truth: no effect on customers without an address
    assert np.all(effect[~WORLD.email] == 0)
    assert WORLD.true_uplift([arm]) == pytest.approx(effect.mean())
    weighted = WORLD.true_uplift([arm, Arm("b", "inapp", weight=3)])
    assert weighted == pytest.approx(0.25 * effect.mean() + 0.75 * WORLD.effect(Arm("b", "inapp")).mean())
    p0 = baseline(np.array([0, 10, 40]))
    assert list(p0) == sorted(p0) and 0 < p0[0] < 0.05
    assert np.all(treated(p0, np.ones(3), np.zeros(3), lift=10, channel="sms") <= 1)
    with pytest.raises(ValueError, match="channel 'fax'"):
        treated(p0, np.ones(3), np.zeros(3), lift=1, channel="fax")
