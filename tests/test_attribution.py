"""Attribution: the documented rule on a worked example and its edges, the same
answer as an independent computation on random data (both stores), and replays
that attribute nothing twice."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from ceap.outcomes.attribution import attribute
from ceap.outcomes.goals import record_goal_events
from ceap.spec.program import Goal
from ceap.store import Store, open_store
from tests.outcome_helpers import add_delivery, events, rows, seed

T0 = datetime(2026, 5, 1, 0, 0, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.fixture
def store(store_url: str) -> Any:
    s = open_store(store_url)
    yield s
    s.close()


def program(name: str, event: str | list[str] = "purchase", within: str = "7d",
            value: str | None = "amount") -> Any:
    return SimpleNamespace(name=name, goal=Goal(event=event, within=within, value=value))


def purchase(eid: str, customer: str, at: datetime, amount: float | None = None, *, tenant: str = "default",
             kind: str = "purchase") -> dict[str, Any]:
    return {"id": eid, "type": kind, "ts": at.isoformat(), "customer_id": customer, "tenant_id": tenant,
            "attributes": {} if amount is None else {"amount": amount}}


def record(store: Store, *items: dict[str, Any], goals: dict[str, str | None] | None = None) -> int:
    return record_goal_events(store, events(*items), goals or {"purchase": "amount"}, T0)


def conversions(store: Store) -> list[tuple[Any, ...]]:
    return rows(store, "SELECT program, event_id, candidate_id, value FROM conversions "
                       "ORDER BY program, event_id")


def test_the_worked_example_of_the_docs(store: Store) -> None:
    """docs/outcomes.md, "A worked example": three customers of win_back, one held out."""
    ana, ben, cleo = seed(store, T0, 3, program="win_back",
                          customer_id=lambda i: ["ana", "ben", "cleo"][i], holdout=lambda i: i == 2,
                          not_before=T0 + 9 * H)
    add_delivery(store, ana, sent_at=T0 + 9 * H + timedelta(minutes=5))
    # ben's e-mail was suppressed (quiet hours...): intention to treat keeps him, touched at not_before
    record(store, purchase("o1", "ana", T0 + 2 * 24 * H, 40.0),        # day 2: ana's
           purchase("o2", "ana", T0 + 9 * 24 * H, 25.0),               # day 9: past ana's 7 days
           purchase("o3", "ben", T0 + 8 * H, 30.0),                    # before ben's touch
           purchase("o4", "ben", T0 + 3 * 24 * H),                     # day 3, no amount
           purchase("o5", "cleo", T0 + 24 * H, 55.0))                  # the held-out customer
    result = attribute(store, [program("win_back", within="7d")], now=T0 + 10 * 24 * H)
    assert result.programs == {"win_back": 3} and result.inserted == 3
    assert conversions(store) == [("win_back", "o1", ana, 40.0), ("win_back", "o4", ben, None),
                                  ("win_back", "o5", cleo, 55.0)]
    [(touch,)] = rows(store, "SELECT touch_ts FROM conversions WHERE event_id = 'o1'")
    with store.tx() as tx:
        assert touch == tx.ts(T0 + 9 * H + timedelta(minutes=5))  # the send, not not_before


def test_the_last_touch_within_the_window_wins_and_the_window_is_inclusive(store: Store) -> None:
    first, second, late = seed(store, T0, 3, customer_id="ana", not_before=lambda i: T0 + i * 10 * H)
    add_delivery(store, first, sent_at=T0)
    add_delivery(store, second, sent_at=T0 + 10 * H, channel="sms")
    add_delivery(store, second, sent_at=T0 + 12 * H, channel="email")  # the first send is the touch
    record(store, purchase("at_touch", "ana", T0 + 10 * H),           # == second's touch
           purchase("between", "ana", T0 + 15 * H),                  # second (latest before it)
           purchase("edge", "ana", T0 + 20 * H + 24 * H),            # late's touch + 1d exactly
           purchase("after", "ana", T0 + 20 * H + 24 * H + timedelta(microseconds=1)),
           purchase("before_all", "ana", T0 - H))
    attribute(store, [program("offer", within="1d")], now=T0)
    assert conversions(store) == [("offer", "at_touch", second, None), ("offer", "between", second, None),
                                  ("offer", "edge", late, None)]


def test_an_event_counts_once_per_program_and_for_each_program_with_that_goal(store: Store) -> None:
    [a] = seed(store, T0, program="a", run="ra")
    [b] = seed(store, T0, program="b", run="rb")
    [c] = seed(store, T0, program="c", run="rc")
    record(store, purchase("p1", "c0", T0 + H, 10.0),
           {"id": "s1", "type": "signup", "ts": (T0 + H).isoformat(), "customer_id": "c0"},
           goals={"purchase": "amount", "signup": None})
    attribute(store, [program("a"), program("b", value=None), program("c", event="signup"),
                      SimpleNamespace(name="no_goal", goal=None)], now=T0)
    assert conversions(store) == [("a", "p1", a, 10.0), ("b", "p1", b, None), ("c", "s1", c, None)]


def test_tenants_and_customers_do_not_mix(store: Store) -> None:
    [mine] = seed(store, T0, customer_id="ana")
    seed(store, T0, customer_id="ana", tenant_id="other", run="r2")
    record(store, purchase("p1", "ana", T0 + H, tenant="other"), purchase("p2", "bob", T0 + H),
           purchase("p3", "ana", T0 + H))
    attribute(store, [program("offer")], now=T0)
    assert rows(store, "SELECT tenant_id, event_id, candidate_id FROM conversions ORDER BY tenant_id") == [
        ("default", "p3", mine), ("other", "p1", mine + 1)]


def test_replays_and_reruns_attribute_nothing_twice(store: Store) -> None:
    ids = seed(store, T0, 4, customer_id=lambda i: f"c{i}")
    first = [purchase(f"p{i}", f"c{i}", T0 + H, float(i)) for i in range(4)]
    assert record(store, *first) == 4
    assert attribute(store, [program("offer")], now=T0).inserted == 4
    before = rows(store, "SELECT * FROM conversions ORDER BY event_id")
    assert record(store, *first) == 0  # the same events again (a replayed stream)
    again = attribute(store, [program("offer")], now=T0 + 24 * H)
    assert (again.inserted, again.programs) == (0, {})
    # a newer candidate does not take over an event already attributed: conversions are final
    seed(store, T0 + H, customer_id="c0", run="r2", not_before=T0 + timedelta(minutes=30))
    record(store, purchase("p9", "c1", T0 + 2 * H))
    assert attribute(store, [program("offer")], now=T0 + 48 * H).inserted == 1
    assert rows(store, "SELECT * FROM conversions WHERE event_id <> 'p9' ORDER BY event_id") == before
    assert ("offer", "p9", ids[1], None) in conversions(store)


# -- against an independent computation ------------------------------------------------------


@dataclass
class World:
    cands: list[tuple[int, str, str, str, bool, datetime]]      # id, tenant, program, customer, holdout, nb
    sends: dict[int, list[datetime]]
    goals: list[tuple[str, str, str, str, datetime, float | None]]  # tenant, id, customer, type, ts, value
    programs: list[Any]


def brute_force(world: World) -> set[tuple[str, str, str, int, float | None]]:
    """The documented rule, one event and one candidate at a time."""
    out = set()
    for spec in world.programs:
        for tenant, eid, customer, kind, ts, value in world.goals:
            if kind not in spec.goal.event:
                continue
            best: tuple[datetime, int] | None = None
            for cid, c_tenant, c_program, c_customer, holdout, nb in world.cands:
                if (c_tenant, c_program, c_customer) != (tenant, spec.name, customer):
                    continue
                sent = world.sends.get(cid)
                touch = nb if holdout or not sent else min(sent)
                if touch <= ts <= touch + spec.goal.within and (best is None or (touch, cid) > best):
                    best = (touch, cid)
            if best is not None:
                out.add((tenant, spec.name, eid, best[1], value if spec.goal.value else None))
    return out


def random_world(store: Store, rng: random.Random) -> World:
    programs = [program("alpha", within="2d"), program("beta", event=["purchase", "signup"], within="12h"),
                program("gamma", event="signup", within="3d", value=None)]
    cands: list[tuple[int, str, str, str, bool, datetime]] = []
    sends: dict[int, list[datetime]] = {}
    for run in range(6):
        tenant = rng.choice(["default", "acme"])
        name = rng.choice(["alpha", "beta", "gamma", "delta"])
        n = rng.randint(20, 60)
        nbs = [T0 + timedelta(minutes=rng.randint(0, 6 * 24 * 60)) for _ in range(n)]
        holdouts = [rng.random() < 0.2 for _ in range(n)]
        customers = [f"c{rng.randint(0, 40)}" for _ in range(n)]
        ids = seed(store, T0, n, program=name, run=f"r{run}", tenant_id=tenant,
                   customer_id=lambda i, cs=customers: cs[i], holdout=lambda i, h=holdouts: h[i],
                   not_before=lambda i, ns=nbs: ns[i])
        for cid, customer, holdout, nb in zip(ids, customers, holdouts, nbs, strict=True):
            cands.append((cid, tenant, name, customer, holdout, nb))
            if holdout:
                continue
            for step, channel in enumerate(("email", "sms")):
                if rng.random() < 0.6:
                    at = nb + timedelta(minutes=rng.randint(0, 600))
                    add_delivery(store, cid, channel=channel, sent_at=at, key=f"{tenant}:{cid}:{step}")
                    sends.setdefault(cid, []).append(at)
                elif rng.random() < 0.3:  # suppressed or still queued: no send
                    add_delivery(store, cid, channel=channel, sent_at=None, status="suppressed",
                                 created_at=nb, key=f"{tenant}:{cid}:{step}")
    goals = []
    for i in range(700):
        ts = T0 + timedelta(minutes=rng.randint(-600, 9 * 24 * 60))
        value = rng.choice([None, round(rng.uniform(1, 500), 2)])
        goals.append((rng.choice(["default", "acme"]), f"g{i}", f"c{rng.randint(0, 40)}",
                      rng.choice(["purchase", "signup", "page_view"]), ts, value))
    items = [{"id": g[1], "type": g[3], "ts": g[4].isoformat(), "customer_id": g[2], "tenant_id": g[0],
              "attributes": {} if g[5] is None else {"amount": g[5]}} for g in goals]
    record(store, *items, goals={"purchase": "amount", "signup": "amount"})
    return World(cands, sends, goals, programs)


@pytest.mark.parametrize("seed_value", [1, 2])
def test_attribution_matches_an_independent_computation(store: Store, seed_value: int) -> None:
    world = random_world(store, random.Random(seed_value))
    expected = brute_force(world)
    assert len(expected) > 50  # the data exercises the rule
    result = attribute(store, world.programs, now=T0)
    got = set(rows(store, "SELECT tenant_id, program, event_id, candidate_id, value FROM conversions"))
    assert got == expected
    assert result.inserted == len(expected) and sum(result.programs.values()) == len(expected)
    assert attribute(store, world.programs, now=T0).inserted == 0
