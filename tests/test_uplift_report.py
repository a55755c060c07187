"""`ceap report uplift`: the numbers against an independent computation (pandas and
statsmodels on the raw rows), breakdowns, guardrails, the small-sample warning, JSON
and figures, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats
from statsmodels.stats import proportion
from typer.testing import CliRunner

from ceap.cli import app
from ceap.experiments.uplift import uplift_report
from ceap.model import RunRecord
from ceap.spec.experiment import Guardrails
from ceap.store import Store
from ceap.testing import make_candidates
from tests.experiment_helpers import add_conversions, add_engagements, candidate_ids

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
T0 = NOW - timedelta(days=20)
runner = CliRunner()


def write_synthetic(store: Store, n: int = 3000, seed: int = 7, program: str = "promo") -> dict[str, Any]:
    """Customers in three arms and two variants, some with two candidates; treated
    customers with a high score convert more (the model finds the people it helps)."""
    rng = np.random.default_rng(seed)
    arm = rng.choice(["treatment", "holdout", "global_control"], p=[0.7, 0.2, 0.1], size=n)
    variant = rng.choice(["a", "b"], size=n)
    score = rng.random(n)
    rows = []  # (customer, arm, variant, score, created, key)
    for i in range(n):
        rows.append((f"u{i:05d}", arm[i], variant[i], float(score[i]), T0, f"{program}:u{i:05d}:1"))
        if i % 5 == 0:  # a later candidate, with the other variant: the first one counts
            rows.append((f"u{i:05d}", arm[i], "b" if variant[i] == "a" else "a", 0.5,
                         T0 + timedelta(days=3), f"{program}:u{i:05d}:2"))
    table = make_candidates(
        len(rows), program=program, run_id="r1", customer_id=lambda i: rows[i][0],
        arm=lambda i: rows[i][1], holdout=lambda i: rows[i][1] != "treatment",
        status=lambda i: "held_out" if rows[i][1] != "treatment" else "sent",
        variant=lambda i: rows[i][2], score=lambda i: rows[i][3], created_at=lambda i: rows[i][4],
        not_before=lambda i: rows[i][4], expires_at=lambda i: rows[i][4] + timedelta(days=7),
        channels=lambda i: ["email"] if rows[i][2] == "a" else ["sms", "email"],
        dedup_key=lambda i: rows[i][5], subject_id=None)
    store.write_run(RunRecord("r1", "default", program, "succeeded", T0), table)
    found = candidate_ids(store, program)
    conversions, engagements = [], []
    by_customer: dict[str, list[Any]] = {}
    for c in found.values():
        by_customer.setdefault(c.customer_id, []).append(c)
    for customer, cands in sorted(by_customer.items()):
        first = min(cands, key=lambda c: (c.created_at, c.id))
        base = 0.06
        if first.arm == "treatment":
            base += (0.04 if first.variant == "a" else 0.10) * (0.5 + first.score)
        if rng.random() < base:
            hit = cands[int(rng.integers(len(cands)))]  # any of the customer's candidates
            conversions.append(("default", program, hit.id, customer, float(rng.gamma(2, 20))))
            if rng.random() < 0.2:  # a second purchase, no value recorded
                conversions.append(("default", program, hit.id, customer, None))
        if first.arm == "treatment" and rng.random() < 0.01:
            engagements.append(("default", first.id, program, customer, "unsubscribed"))
        if first.arm == "treatment" and rng.random() < 0.004:
            engagements.append(("default", None, program, customer, "complained"))
    engagements.append(("default", None, "other_program", "u00001", "unsubscribed"))  # not ours
    add_conversions(store, conversions, NOW)
    add_engagements(store, engagements, NOW)
    return {"conversions": conversions, "engagements": engagements}


def independent(store: Store, raw: dict[str, Any], program: str = "promo") -> pd.DataFrame:
    """Per customer, from the raw rows with pandas: the first candidate's arm, variant,
    score and channel; converted; value; guardrail engagements."""
    cands = pd.DataFrame([asdict(c) for c in candidate_ids(store, program).values()])
    first = cands.sort_values(["created_at", "id"]).groupby("customer_id", as_index=False).first()
    first["channel"] = first["channels"].map(lambda ch: ch[0])
    conv = pd.DataFrame(raw["conversions"], columns=["tenant", "program", "candidate_id",
                                                     "customer_id", "value"])
    per = conv.groupby("customer_id").agg(conversions=("value", "size"),
                                          value=("value", lambda v: v.fillna(0).sum()))
    first = first.merge(per, on="customer_id", how="left").fillna({"conversions": 0, "value": 0.0})
    first["converted"] = first["conversions"] > 0
    eng = pd.DataFrame(raw["engagements"], columns=["tenant", "candidate_id", "program",
                                                    "customer_id", "type"])
    eng = eng[eng["program"] == program]
    for kind in ("unsubscribed", "complained"):
        first[kind] = first["customer_id"].isin(set(eng[eng["type"] == kind]["customer_id"]))
    order = first.sort_values(["score", "customer_id"]).index
    n = len(first)
    sizes = [n // 10 + (1 if b < n % 10 else 0) for b in range(10)]
    first.loc[order, "decile"] = np.repeat(np.arange(1, 11), sizes)
    return first


def check(comparison: Any, t: pd.DataFrame, c: pd.DataFrame) -> None:
    kt, nt, kc, nc = int(t["converted"].sum()), len(t), int(c["converted"].sum()), len(c)
    assert (comparison.treated.customers, comparison.treated.converted) == (nt, kt)
    assert (comparison.control.customers, comparison.control.converted) == (nc, kc)
    assert comparison.absolute_uplift == pytest.approx(kt / nt - kc / nc)
    low, high = proportion.confint_proportions_2indep(kt, nt, kc, nc, method="newcomb", compare="diff")
    assert comparison.absolute_ci == pytest.approx((low, high))
    assert comparison.p_value == pytest.approx(
        proportion.test_proportions_2indep(kt, nt, kc, nc, method="score", compare="diff").pvalue)
    low, high = proportion.confint_proportions_2indep(kt, nt, kc, nc, method="score", compare="ratio")
    assert comparison.relative_uplift == pytest.approx((kt / nt) / (kc / nc) - 1)
    assert comparison.relative_ci == pytest.approx((low - 1, high - 1))
    welch = stats.ttest_ind(t["value"], c["value"], equal_var=False)
    assert comparison.value_difference == pytest.approx(t["value"].mean() - c["value"].mean())
    assert comparison.value_p_value == pytest.approx(welch.pvalue)
    ci = welch.confidence_interval()
    assert comparison.value_ci == pytest.approx((ci.low, ci.high))
    assert comparison.treated.rate_ci == pytest.approx(proportion.proportion_confint(kt, nt, method="wilson"))
    assert comparison.treated.value == pytest.approx(t["value"].sum())


def test_report_numbers_match_an_independent_computation(store: Store) -> None:
    raw = write_synthetic(store)
    frame = independent(store, raw)
    report = uplift_report(store, "default", "promo", NOW, by="variant")
    treated = frame[frame["arm"] == "treatment"]
    holdout, global_control = frame[frame["arm"] == "holdout"], frame[frame["arm"] == "global_control"]
    assert {k: a.customers for k, a in report.arms.items()} == {
        "treatment": len(treated), "holdout": len(holdout), "global_control": len(global_control)}
    assert [c.label for c in report.comparisons] == ["treatment vs holdout",
                                                     "treatment vs global_control"]
    check(report.comparisons[0], treated, holdout)
    check(report.comparisons[1], treated, global_control)
    assert report.comparisons[0].significant and not report.comparisons[0].small_sample
    # by variant, fixed weights: each variant's treated against the whole holdout
    assert [g.label for g in report.groups] == ["a", "b"] and report.control_for_groups == "holdout"
    for g in report.groups:
        check(g, treated[treated["variant"] == g.label], holdout)
    assert report.arms["treatment"].unsubscribed == int(treated["unsubscribed"].sum()) > 0
    assert report.arms["treatment"].complained == int(treated["complained"].sum()) > 0
    unsub = report.guardrails[0]
    assert (unsub.name, unsub.treated, unsub.customers) == ("unsubscribe",
                                                            int(treated["unsubscribed"].sum()),
                                                            len(treated))


def test_breakdowns_by_decile_and_channel_use_matched_controls(store: Store) -> None:
    raw = write_synthetic(store)
    frame = independent(store, raw)
    treated, holdout = frame[frame["arm"] == "treatment"], frame[frame["arm"] == "holdout"]
    deciles = uplift_report(store, "default", "promo", NOW, by="score_decile")
    assert [g.label for g in deciles.groups] == [f"decile {d}" for d in range(1, 11)]
    for d, g in enumerate(deciles.groups, start=1):
        check(g, treated[treated["decile"] == d], holdout[holdout["decile"] == d])
    # the model picks the people the action helps: the top deciles gain more than the bottom ones
    top = np.mean([g.absolute_uplift for g in deciles.groups[-3:]])
    bottom = np.mean([g.absolute_uplift for g in deciles.groups[:3]])
    assert top > bottom
    channels = uplift_report(store, "default", "promo", NOW, by="channel")
    assert [g.label for g in channels.groups] == ["email", "sms"]
    for g in channels.groups:
        check(g, treated[treated["channel"] == g.label], holdout[holdout["channel"] == g.label])
    # under a bandit, each variant against the control customers who would have had it
    matched = uplift_report(store, "default", "promo", NOW, by="variant", bandit=True)
    for g in matched.groups:
        check(g, treated[treated["variant"] == g.label], holdout[holdout["variant"] == g.label])


def test_since_limits_the_period(store: Store) -> None:
    write_synthetic(store)
    later = uplift_report(store, "default", "promo", NOW, since=T0 + timedelta(days=1))
    # only the second candidates (every fifth customer) were created after the first day
    assert sum(a.customers for a in later.arms.values()) == 600


def test_small_samples_and_guardrails_warn(store: Store) -> None:
    write_synthetic(store, n=60, seed=3, program="tiny")
    report = uplift_report(store, "default", "tiny", NOW,
                           guardrails=Guardrails(max_unsubscribe_rate=0.0, max_complaint_rate=1.0))
    first = report.comparisons[0]
    assert first.small_sample and not first.significant
    assert any(n.startswith("sample too small to conclude: each arm needs at least 10 conversions")
               for n in first.notes)
    assert "treatment vs holdout: sample too small to conclude" in report.warnings
    assert not report.guardrails[1].exceeded


def test_no_outcomes_yet_says_so(store: Store) -> None:
    table = make_candidates(4, program="fresh", arm=lambda i: "holdout" if i == 0 else "treatment",
                            holdout=lambda i: i == 0)
    store.write_run(RunRecord("r", "default", "fresh", "succeeded", NOW), table)
    report = uplift_report(store, "default", "fresh", NOW)
    if not any("conversions" in w for w in report.warnings):  # another part made the table
        assert report.arms["treatment"].converted == 0
    assert report.arms["treatment"].customers == 3 and report.arms["holdout"].customers == 1
    assert report.comparisons[0].small_sample


def test_no_control_customers_says_how_many_and_why(store: Store) -> None:
    # a program with a holdout whose few customers all drew into the treatment
    store.write_run(RunRecord("r", "default", "few", "succeeded", NOW),
                    make_candidates(3, program="few", arm="treatment", holdout=False))
    report = uplift_report(store, "default", "few", NOW)
    [warning] = [w for w in report.warnings if w.startswith("no control customers")]
    assert "none of the 3 customer(s) drew into a control group" in warning
    assert "experiment.holdout" in warning and "if it is set" in warning


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CEAP_STORE", store_url)
    (tmp_path / "programs").mkdir()
    spec = {"name": "promo", "source": {"type": "csv", "path": "x.csv"},
            "action": {"type": "offer", "channels": ["email"]},
            "experiment": {"holdout": 0.2, "variants": [{"name": "a"}, {"name": "b"}],
                           "guardrails": {"max_unsubscribe_rate": 0.001}}}
    (tmp_path / "programs" / "promo.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path


def test_cli_prints_json_and_writes_figures(project: Path, store: Store) -> None:
    write_synthetic(store)
    result = runner.invoke(app, ["report", "uplift", "promo", "--by", "variant", "--json",
                                 "--plot", str(project / "uplift.png")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    expected = uplift_report(store, "default", "promo", NOW, by="variant")
    assert data["arms"]["treatment"]["converted"] == expected.arms["treatment"].converted
    assert data["comparisons"][0]["p_value"] == pytest.approx(expected.comparisons[0].p_value)
    assert [g["label"] for g in data["groups"]] == ["a", "b"]
    assert data["methods"]["absolute_uplift_ci"].startswith("Newcombe")
    assert data["guardrails"][0]["limit"] == 0.001 and data["guardrails"][0]["exceeded"]
    assert any(w.startswith("guardrail: unsubscribe rate") for w in data["warnings"])
    png = (project / "uplift.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    text = runner.invoke(app, ["report", "uplift", "promo", "--by", "score_decile",
                               "--plot", str(project / "uplift.svg")])
    assert text.exit_code == 0, text.output
    assert "treatment vs holdout" in text.stdout and "decile 10" in text.stdout
    assert "guardrail unsubscribe" in text.stdout and "above the limit" in text.stdout
    svg = (project / "uplift.svg").read_text()
    assert svg.startswith("<svg") and "decile 10" in svg
    spec = runner.invoke(app, ["report", "uplift", "promo", "--plot", str(project / "fig.json")])
    assert spec.exit_code == 0
    figure = json.loads((project / "fig.json").read_text())
    assert figure["vconcat"][0]["data"]["values"][0]["arm"] == "treatment"


def test_cli_rejects_bad_options(project: Path) -> None:
    bad = runner.invoke(app, ["report", "uplift", "promo", "--by", "colour"])
    assert bad.exit_code == 2 and "--by: expected one of variant, score_decile, channel" in bad.stderr
    bad = runner.invoke(app, ["report", "uplift", "promo", "--plot", "fig.gif"])
    assert bad.exit_code == 2 and "use a .png, .svg or .json file name" in bad.stderr
    bad = runner.invoke(app, ["report", "uplift", "promo", "--since", "soon"])
    assert bad.exit_code == 2 and "--since: expected a duration" in bad.stderr



def test_the_printed_report_cuts_nothing_off_in_80_columns(project: Path, store: Store) -> None:
    """docs/cli.md: tables for people fold long values onto more lines, nothing is cut off;
    a removed program (no file) is still reported from its candidates."""
    write_synthetic(store, n=200, program="gone_program")
    result = CliRunner().invoke(app, ["report", "uplift", "gone_program"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output and "gone_program: arms" in result.output


def test_an_unknown_program_is_an_error_not_an_empty_report(project: Path, store: Store) -> None:
    result = runner.invoke(app, ["report", "uplift", "promos"])
    assert result.exit_code == 2
    assert "unknown program 'promos': no program file" in result.stderr
    assert "no candidates in the store" in result.stderr
    write_synthetic(store, n=50, program="gone")  # removed, but its candidates are there
    old = runner.invoke(app, ["report", "uplift", "gone", "--since", "1d"])  # none in the period
    assert old.exit_code == 0 and "no candidates for this program in the period" in old.stderr


def test_a_program_without_a_goal_says_why_nothing_converts(project: Path, store: Store) -> None:
    write_synthetic(store)
    result = runner.invoke(app, ["report", "uplift", "promo", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["warnings"][0].startswith("the program has no goal")
    spec = yaml.safe_load((project / "programs" / "promo.yaml").read_text())
    spec["goal"] = {"event": "purchase", "within": "7d"}
    (project / "programs" / "promo.yaml").write_text(yaml.safe_dump(spec))
    result = runner.invoke(app, ["report", "uplift", "promo", "--json"])
    assert result.exit_code == 0, result.output
    assert not any("no goal" in w for w in json.loads(result.stdout)["warnings"])
