"""What a one-shot dispatch does with rate limits and open breakers, and the channels'
own ``max_attempts`` applied from ``ceap.yaml``."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ceap.cli import app
from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.outbox import Retry
from ceap.testing import ProviderServer, Reply
from ceap.testing.doubles import FakeClock
from tests.helpers import ORDERS, ORDERS_HEADER, base_program, write_csv, write_program
from tests.test_dispatcher import T0, FlakyChannel, FlakyConfig, seed

runner = CliRunner()
PIPED = {"TTY_COMPATIBLE": None, "FORCE_COLOR": None, "COLUMNS": "80"}
SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def test_a_one_shot_run_finishes_what_is_due_within_the_rate_limit(store: Any) -> None:
    seed(store, 3)
    clock = FakeClock(T0)
    email = FlakyChannel(FlakyConfig(rate_per_sec=0.5))
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds=seconds)

    d = Dispatcher(store, {"email": email}, clock=clock, sleep=sleep)
    stats = d.run()
    assert (stats.planned, stats.attempted, stats.sent) == (3, 3, 3)
    assert (stats.held_rate_limit, stats.held_circuit_open, d.held) == (0, 0, {})
    assert sum(waits) >= 4.0          # two more tokens at 0.5/s, on the fake clock
    sent_at = sorted(x.sent_at for x in d.outbox.deliveries("default") if x.sent_at)
    assert (sent_at[-1] - sent_at[0]).total_seconds() >= 4.0


def test_a_stopped_run_says_how_many_the_rate_limit_held_back(store: Any) -> None:
    seed(store, 3)
    stop = threading.Event()
    told: list[dict[str, int]] = []

    def on_wait(due: dict[str, int], seconds: float) -> None:
        told.append(due)
        stop.set()                    # Ctrl-C while waiting for the next token

    d = Dispatcher(store, {"email": FlakyChannel(FlakyConfig(rate_per_sec=0.5))},
                   clock=FakeClock(T0), sleep=lambda s: None)
    stats = d.run(stop=stop, on_wait=on_wait)
    assert told == [{"email": 2}]
    assert (stats.planned, stats.attempted, stats.held_rate_limit) == (3, 1, 2)
    assert d.held == {"email": (2, "rate limit 0.5/s")}
    assert {x.status for x in d.outbox.deliveries("default")} == {"sent", "queued"}


def test_a_scheduler_pass_does_not_wait_but_says_what_it_held(store: Any) -> None:
    seed(store, 3)
    d = Dispatcher(store, {"email": FlakyChannel(FlakyConfig(rate_per_sec=0.5))},
                   clock=FakeClock(T0), sleep=lambda s: pytest.fail("waited"))
    stats = d.run(wait=False)
    assert (stats.attempted, stats.held_rate_limit) == (1, 2)


def test_an_open_breaker_is_not_waited_for_and_is_named(store: Any) -> None:
    seed(store, 3)
    clock = FakeClock(T0)
    email = FlakyChannel(FlakyConfig(rate_per_sec=0.5, fail_forever=True, breaker_failures=1))
    d = Dispatcher(store, {"email": email}, clock=clock, retry=Retry(base=3600, cap=3600),
                   sleep=lambda s: clock.advance(seconds=s))
    stats = d.run()
    assert (stats.attempted, stats.retry, stats.held_circuit_open) == (1, 1, 2)
    assert d.held == {"email": (2, "circuit open after 1 failures in a row")}


# -- through the CLI, from ceap.yaml ---------------------------------------------------
@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    write_csv(tmp_path / "orders.csv", ORDERS_HEADER, ORDERS)
    (tmp_path / "programs").mkdir()
    action = {**base_program()["action"], "channels": ["hook"]}
    write_program(tmp_path / "programs" / "carts.yaml", base_program(name="carts", action=action))
    return tmp_path


def configure(project: Path, hook: dict[str, Any]) -> None:
    (project / "ceap.yaml").write_text(yaml.safe_dump({"channels": {"hook": {
        "type": "webhook", "secret_env": "HOOK_SECRET", "allow_private": True, **hook}}}))
    assert runner.invoke(app, ["run", "carts"]).exit_code == 0


def test_the_channel_max_attempts_in_ceap_yaml_is_applied(project: Path) -> None:
    with ProviderServer() as provider:
        provider.default = lambda _r: Reply(503, {})
        configure(project, {"url": f"{provider.url}/h", "max_attempts": 1})
        result = runner.invoke(app, ["dispatch", "--json"], env=PIPED)
        assert result.exit_code == 0, result.output
        run = json.loads(result.stdout)["run"]
        assert (run["attempted"], run["retry"], run["dead"]) == (2, 0, 2)
        listed = json.loads(runner.invoke(app, ["deliveries", "--json"], env=PIPED).stdout)
        assert {d["status"] for d in listed} == {"dead"}
        assert all(d["last_error"].startswith("gave up after 1 attempts") for d in listed)


def test_ceap_dispatch_sends_everything_due_at_the_channel_rate(project: Path) -> None:
    with ProviderServer() as provider:
        configure(project, {"url": f"{provider.url}/h", "rate_per_sec": 1})
        result = runner.invoke(app, ["dispatch", "--json"], env=PIPED)
        assert result.exit_code == 0, result.output
        run = json.loads(result.stdout)["run"]
        assert (run["planned"], run["attempted"], run["sent"], run["held_rate_limit"]) == (2, 2, 2, 0)
        assert len(provider.calls("/h")) == 2
        assert "hook: 1 due, sent at its rate limit (1/s" in result.stderr
