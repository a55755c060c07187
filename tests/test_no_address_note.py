"""A channel dropped for want of an address, while another channel still goes, is named in
the candidate's ``status_reason`` (as consent and suppression drops are), so ``ceap
candidates`` says why a customer got the in-app request and not the e-mail (use case 0)."""

from __future__ import annotations

from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.policies import default_policies
from ceap.store import Store
from ceap.testing.doubles import FakeClock
from tests.test_policies import T0, channels, profiles, rows, seed


def test_the_dropped_channel_and_why_are_in_the_status_reason(store: Store) -> None:
    profiles(store, 2, email=["c0@example.com", None])
    seed(store, 2, program="review", channels=["email", "inapp"])
    chans = channels()
    Dispatcher(store, chans, policies=default_policies({}), clock=FakeClock(T0)).run()  # type: ignore[arg-type]
    assert [m.customer_id for m in chans["email"].accepted] == ["c0"]
    assert [m.customer_id for m in chans["inapp"].accepted] == ["c1"]
    reasons = [r[2] for r in rows(store)]
    assert reasons == [None, "email: no email in the profile"]
