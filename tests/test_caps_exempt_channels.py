"""``caps.exempt_channels``: an internal channel (a call task for the account manager, use
case 7) is neither held by the frequency caps nor counted toward them, so with
``deliver: all`` the customer's e-mail and the task both go under a cap of one a day."""

from __future__ import annotations

from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.policies import default_policies
from ceap.spec import parse_program
from ceap.store import Store
from ceap.testing.doubles import FakeClock
from tests.test_policies import T0, channels, profiles, rows, seed

CAP = {"per_customer": [{"max": 1, "window": "1d"}]}


def _run(store: Store, caps: dict[str, object]) -> dict[str, list[str]]:
    profiles(store, 1)
    program = parse_program({"name": "churn", "source": {"type": "csv", "path": "x"},
                             "action": {"type": "offer", "channels": ["email", "inapp"], "deliver": "all"}})
    seed(store, 1, program="churn", channels=["email", "inapp"])
    chans = channels()
    Dispatcher(store, chans, programs={"churn": program},  # type: ignore[arg-type]
               policies=default_policies({"caps": caps}), clock=FakeClock(T0)).run()
    seed(store, 1, program="later", channels=["email"])  # the cap's one slot is the first e-mail's
    Dispatcher(store, chans, policies=default_policies({"caps": caps}),  # type: ignore[arg-type]
               clock=FakeClock(T0)).run()
    return {name: [m.program for m in chan.accepted] for name, chan in chans.items()}


def test_without_it_the_second_channel_loses_the_slot(store: Store) -> None:
    sent = _run(store, CAP)
    assert sent["email"] == ["churn"] and sent["inapp"] == []
    assert "inapp: per_customer cap 1/1d reached" in (rows(store)[0][2] or "")


def test_an_exempt_channel_is_neither_held_nor_counted(store: Store) -> None:
    sent = _run(store, {**CAP, "exempt_channels": ["inapp"]})
    assert sent["email"] == ["churn"] and sent["inapp"] == ["churn"]
    later = [r for r in rows(store) if r[0] == "later"]
    assert later[0][1] == "suppressed"  # the e-mail used the slot; the task did not count
    assert "1 already sent or queued in 1d (churn)" in (later[0][2] or "")
