"""Structured logs: JSON lines off a terminal with a stable set of fields, and no
personal data in the logs of a run, a dispatch and API requests."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from ceap.api import create_app
from ceap.channels.base import Message, SendResult
from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.outbox import Retry
from ceap.delivery.profiles import upsert_profiles
from ceap.observability.logs import customer_ref, scrub, setup_logging
from ceap.plugin import PluginContext
from ceap.runtime.batch import run_program
from ceap.spec import parse_program
from ceap.store import Store
from ceap.testing import FakeClock
from tests.helpers import base_program, write_csv
from tests.obs_helpers import value
from tests.test_dispatcher import T0, FlakyChannel, FlakyConfig

CUSTOMERS = ["cust-7f3a91", "cust-b20c44", "cust-e95d17"]
EMAILS = ["alice.smith@example.org", "bob.jones@example.net", "carol.white@example.com"]
PHONES = ["+15550104477", "+447700900123", "+33612345678"]
SECRET_VARIABLE = "SECRET-OFFER-7731"
PERSONAL = [*CUSTOMERS, *EMAILS, *PHONES, SECRET_VARIABLE]


@pytest.fixture
def json_logs() -> Iterator[None]:
    setup_logging("json", "debug")
    yield
    setup_logging("text", "warning")


class LeakyChannel(FlakyChannel):
    """A provider whose failures quote the message: the address, the payload."""

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        raise RuntimeError(f"provider refused {messages[0].to}: {messages[0].payload}")


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_run_dispatch_and_api_logs_hold_no_personal_data(json_logs: None, store: Store, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    header = "customer_id,cart_value,country,signup,product_id,marketplace"
    rows = [f"{c},{90 + i},US,2024-01-0{i + 1},p{i},us" for i, c in enumerate(CUSTOMERS)]
    rows.append(f"{EMAILS[0]},70,US,not-a-date,p9,us")  # a quarantined row quoting an address
    write_csv(tmp_path / "orders.csv", header, rows)
    spec = base_program(action={"type": "offer", "channels": ["email"],
                                "payload": {"code": SECRET_VARIABLE}, "payload_columns": ["cart_value"]})
    context = PluginContext(base_dir=tmp_path)
    result = run_program(parse_program(spec, "big_carts.yaml"), store, context, now=T0)
    assert result.funnel.written == 3
    upsert_profiles(store, pa.table({"customer_id": CUSTOMERS, "email": EMAILS, "phone": PHONES}), "default")

    leaky = LeakyChannel(FlakyConfig())
    Dispatcher(store, {"email": leaky}, clock=FakeClock(T0), retry=Retry(max_attempts=1)).run()
    app = create_app(store, auth=False)

    @app.get("/v1/customers/{customer_id}/boom")
    def boom(customer_id: str) -> None:  # a bug that quotes the customer's data
        raise RuntimeError(f"no address for {customer_id}: {EMAILS[2]} {PHONES[2]}")

    api = TestClient(app, raise_server_exceptions=False)
    before = api.get("/metrics").text
    assert api.get(f"/v1/customers/{CUSTOMERS[0]}/candidates").status_code == 200
    assert api.get(f"/v1/customers/{CUSTOMERS[1]}/inbox").status_code == 200
    failed = api.get(f"/v1/customers/{CUSTOMERS[2]}/boom")
    assert failed.status_code == 500
    after = api.get("/metrics").text
    route = "/v1/customers/{customer_id}/boom"
    assert (value(after, "ceap_http_requests_total", method="GET", route=route, status="500")
            - value(before, "ceap_http_requests_total", method="GET", route=route, status="500")) == 1

    logged = capsys.readouterr().err
    records = lines(logged)
    events = [r["event"] for r in records]
    assert any("run big_carts-" in e and "succeeded" in e for e in events), events
    assert any("channel email raised RuntimeError" in e for e in events), events
    [error] = [r for r in records if r["logger"] == "ceap.api"]
    assert error["route"] == route and error["incident"] == failed.headers["X-Error-Id"]
    assert error["error"] == "RuntimeError"  # the frames and the type, not the message
    assert 'raise RuntimeError(f"no address for {customer_id}' in error["traceback"]
    assert error["traceback"].rstrip().endswith("RuntimeError")
    for r in records:
        assert {"ts", "level", "logger", "event"} <= set(r)
        assert r["ts"].endswith("Z")
    for secret in PERSONAL:
        assert secret not in logged, secret


def test_scrubbing_and_customer_refs(json_logs: None, capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("ceap.test")
    log.warning("mail to %s and %s failed", EMAILS[0], PHONES[1],
                extra={"customer_id": CUSTOMERS[0], "program": "win_back", "run_id": "r1", "count": 3})
    try:
        raise ValueError(f"bad address {EMAILS[1]}")
    except ValueError:
        log.exception("send failed", extra={"channel": "email"})
    try:
        try:
            raise KeyError(CUSTOMERS[1])
        except KeyError as exc:
            raise ValueError(f"lookup of {CUSTOMERS[2]}") from exc
    except ValueError:
        log.error("chained", exc_info=True)
    first, second, third = lines(capsys.readouterr().err)
    chain = third["traceback"]
    assert chain.index("KeyError") < chain.index("ValueError") and CUSTOMERS[2] not in chain
    assert first["event"] == "mail to <email> and <phone> failed"
    assert first["customer_ref"] == customer_ref(CUSTOMERS[0]) and "customer_id" not in first
    assert (first["level"], first["logger"], first["program"], first["run_id"], first["count"]) == \
        ("warning", "ceap.test", "win_back", "r1", 3)
    assert second["error"] == "ValueError" and second["channel"] == "email"
    assert "ValueError" in second["traceback"] and EMAILS[1] not in second["traceback"]
    assert scrub("order 20261206 of run r-20261206T101010") == "order 20261206 of run r-20261206T101010"
    assert customer_ref("a") != customer_ref("b") and len(customer_ref("a")) == 16


def test_text_on_a_terminal_json_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from ceap.observability import logs

    class Tty:
        def isatty(self) -> bool:
            return True

        def write(self, _: str) -> int:
            return 0

    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    monkeypatch.setattr("sys.stderr", Tty())
    assert logs.resolve_format() == "text"
    monkeypatch.setenv(logs.FORMAT_ENV, "json")
    assert logs.resolve_format() == "json"
    monkeypatch.undo()
    assert logs.resolve_format("auto") == "json"  # pytest's captured stderr is no terminal
    with pytest.raises(ValueError, match="CEAP_LOG_FORMAT"):
        logs.resolve_format("yaml")


def test_cli_log_options_and_json_progress_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from ceap.cli import app
    from tests.helpers import ORDERS, ORDERS_HEADER, write_program

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    write_csv(tmp_path / "orders.csv", ORDERS_HEADER, ORDERS)
    (tmp_path / "programs").mkdir()
    write_program(tmp_path / "programs" / "big_carts.yaml",
                  base_program(schedule={"cron": "0 * * * *", "timezone": "UTC"}))
    (tmp_path / "programs" / "broken.yaml").write_text("name: broken\nschedule: dayly\n")
    runner = CliRunner()
    bad = runner.invoke(app, ["--log-format", "xml", "schedule"])
    assert bad.exit_code == 2 and "log format 'xml'" in bad.output

    def tick(now: str) -> list[dict[str, Any]]:
        result = runner.invoke(app, ["--log-format", "json", "scheduler", "--once", "--json",
                                     "--no-dispatch", "--now", now])
        assert result.exit_code == 0, result.output
        json.loads(result.stdout)  # the decisions, as before, on standard output
        return lines(result.stderr)

    first = tick("2026-03-02T12:00:10Z")
    assert {(r["logger"], r["level"]) for r in first} == {("ceap.progress", "info"),
                                                           ("ceap.progress", "warning")}
    broken = next(r for r in first if r["level"] == "warning")
    assert broken["event"].startswith("not scheduled:") and broken["file"].endswith("broken.yaml")
    assert any(r["event"] == "active: running the programs on their schedules" and r["leader"] is True
               for r in first)
    ran = next(r for r in tick("2026-03-02T13:00:10Z") if r.get("program") == "big_carts")
    assert (ran["status"], ran["window"], ran["windows"]) == ("succeeded", "2026-03-02T13:00:00+00:00", 1)
    assert ran["run_id"].startswith("big_carts-20260302T130000-")
    setup_logging("text", "warning")
