"""E-mail channels: SMTP against a real aiosmtpd server on 127.0.0.1 (what
arrived: parts, headers, Message-ID, unsubscribe headers; 4xx/5xx answers;
TLS and AUTH; the connection pool), SES through botocore's Stubber and a local
endpoint, and one end-to-end run of the dispatcher."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from pydantic import ValidationError

from ceap.channels.base import Message
from ceap.channels.email_smtp import SmtpChannel, compose, message_id
from ceap.errors import PluginError
from ceap.plugin import PluginContext
from ceap.testing import check_channel, check_registration, make_messages
from tests.channel_helpers import self_signed_cert
from tests.provider_server import Case, ProviderServer, Reply, run_case

UNSUB = {"List-Unsubscribe": "<https://acme.example/u/abc>, <mailto:u-abc@acme.example>",
         "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mailbox:
    """An aiosmtpd handler that keeps what arrived and answers as scripted by the
    recipient's local part: ``rcpt450@``, ``rcpt550@``, ``data451@``, ``data554@``."""

    def __init__(self, delay: float = 0.0, gather: int = 0):
        self.delay = delay
        self.gather = gather  # hold each message until this many were handled at once
        self.received: list[tuple[str, list[str], EmailMessage]] = []
        self.peers: set[Any] = set()
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        local = address.split("@")[0]
        if local == "rcpt450":
            return "450 4.2.1 mailbox busy, try later"
        if local == "rcpt550":
            return "550 5.1.1 no such user"
        if local == "rcpt421":
            return "421 4.3.2 shutting down"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        local = envelope.rcpt_tos[0].split("@")[0]
        if local == "data451":
            return "451 4.3.0 local error, try later"
        if local == "data554":
            return "554 5.7.1 message refused: SECRET policy text"
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.peers.add(session.peer)
        if self.delay:
            await asyncio.sleep(self.delay)
        for _ in range(3000 if self.gather else 0):  # 30 s: a bound against a hang, not a timing
            if self.max_active >= self.gather:
                break
            await asyncio.sleep(0.01)
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.active -= 1
            self.received.append((str(envelope.mail_from), list(envelope.rcpt_tos), msg))
        return "250 2.0.0 queued"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for _, rcpt, m in self.received if address in rcpt]


class Smtpd:
    def __init__(self, handler: Mailbox, **kw: Any):
        self.handler = handler
        self.port = free_port()
        self.controller = Controller(handler, hostname="127.0.0.1", port=self.port, **kw)
        self.controller.start()

    def config(self, **kw: Any) -> dict[str, Any]:
        return {"type": "smtp", "host": "127.0.0.1", "port": self.port, "security": "none",
                "from_address": "Acme <news@acme.example>", "timeout": 5, **kw}

    def stop(self) -> None:
        self.controller.stop()


class PipeliningMailbox(Mailbox):
    """A ``Mailbox`` whose server offers PIPELINING (RFC 2920), as most real ones do."""

    async def handle_EHLO(self, server: Any, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


@pytest.fixture(params=["plain", "pipelining"])
def smtpd(request: pytest.FixtureRequest) -> Iterator[Smtpd]:
    """Every test of what arrives and what the server answers runs against a server without
    and with PIPELINING (the channel then writes MAIL FROM, RCPT TO and DATA at once)."""
    server = Smtpd(PipeliningMailbox() if request.param == "pipelining" else Mailbox())
    yield server
    server.stop()


def msg(**kw: Any) -> Message:
    base: dict[str, Any] = {"tenant_id": "acme", "idempotency_key": "acme:dedup-1:email", "customer_id": "c1",
                            "program": "win_back", "channel": "email", "title": "We miss you ✓",
                            "body": "Come back for 10% off.", "to": "c1@example.com"}
    return Message(**{**base, **kw})


def send(config: dict[str, Any], messages: list[Message], context: Any = None) -> list[Any]:
    channel = SmtpChannel.from_dict(config, context)
    try:
        return channel.send(messages)
    finally:
        channel.close()


# -- what arrives --------------------------------------------------------------------------------


def test_conformance(smtpd: Smtpd, tmp_path: Path) -> None:
    check_registration("channel", "smtp", SmtpChannel)
    check_channel(SmtpChannel, smtpd.config(sent_keys="sent.db"), PluginContext(base_dir=tmp_path),
                  make_messages(3, to=lambda i: f"c{i}@example.com", channel="smtp"))
    ids = [m["Message-ID"] for _, _, m in smtpd.handler.received]
    assert len(ids) == len(set(ids)) == 5  # 3 new, 1 fresh key, 1 other tenant; no duplicate


def test_multipart_headers_and_message_id(smtpd: Smtpd) -> None:
    m = msg(html="<p>Come back for <b>10%</b> off.</p>", headers=dict(UNSUB, **{"X-Campaign": "wb-7"}))
    [result] = send(smtpd.config(reply_to="help@acme.example"), [m])
    assert result.status == "sent"
    [(sender, rcpt, got)] = smtpd.handler.received
    assert (sender, rcpt) == ("news@acme.example", ["c1@example.com"])
    assert got["Subject"] == "We miss you ✓"
    assert got["From"] == "Acme <news@acme.example>"
    assert got["Reply-To"] == "help@acme.example"
    assert got["To"] == "c1@example.com"
    assert got["X-Campaign"] == "wb-7"
    assert got["List-Unsubscribe"] == UNSUB["List-Unsubscribe"]
    assert got["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert email.utils.parsedate_to_datetime(got["Date"]).tzinfo is not None
    assert got.get_content_type() == "multipart/alternative"
    text, html = got.iter_parts()
    assert text.get_content_type() == "text/plain" and text.get_content().strip() == m.body
    assert html.get_content_type() == "text/html" and "<b>10%</b>" in html.get_content()
    assert got["Message-ID"] == result.provider_id == message_id(m, "acme.example")
    assert result.provider_id.endswith("@acme.example>")


def test_text_only_message_is_not_multipart(smtpd: Smtpd) -> None:
    send(smtpd.config(), [msg()])
    [(_, _, got)] = smtpd.handler.received
    assert got.get_content_type() == "text/plain"


def test_message_id_is_stable_per_key_and_tenant() -> None:
    a = message_id(msg(), "x.example")
    assert a == message_id(msg(title="other"), "x.example")
    assert a != message_id(msg(tenant_id="other"), "x.example")
    assert a != message_id(msg(idempotency_key="acme:dedup-2:email"), "x.example")


@pytest.mark.parametrize("require, category, headers, sent", [
    (False, "marketing", {}, True),
    (True, "marketing", {}, False),
    (True, "marketing", UNSUB, True),
    (True, "marketing", {"List-Unsubscribe": "<mailto:u@acme.example>",
                         "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}, False),  # no https URI
    (True, "marketing", {"List-Unsubscribe": "<https://acme.example/u>"}, False),       # no Post header
    (True, "transactional", {}, True),
    (True, "security", {}, True),
])
def test_one_click_unsubscribe(smtpd: Smtpd, require: bool, category: str, headers: dict[str, str],
                               sent: bool) -> None:
    [result] = send(smtpd.config(require_unsubscribe=require), [msg(category=category, headers=headers)])
    assert (result.status == "sent") is sent
    if not sent:
        assert not result.retryable and "RFC 8058" in (result.error or "")
        assert smtpd.handler.received == []


@pytest.mark.parametrize("headers, error", [
    ({"X-Evil": "a\r\nBcc: victim@example.com"}, "linefeed"),
    ({"Bcc": "victim@example.com"}, "may not set the Bcc header"),
    ({"From": "ceo@acme.example"}, "may not set the From header"),
])
def test_header_injection_is_refused(smtpd: Smtpd, headers: dict[str, str], error: str) -> None:
    [result] = send(smtpd.config(), [msg(headers=headers)])
    assert result.status == "failed" and not result.retryable and error in (result.error or "")
    assert smtpd.handler.received == []


def test_missing_address_is_permanent(smtpd: Smtpd) -> None:
    [result] = send(smtpd.config(), [msg(to=None)])
    assert (result.status, result.retryable, result.error) == ("failed", False, "no email for customer 'c1'")


# -- what the server answers --------------------------------------------------------------------

ANSWERS = [  # recipient, retryable, error
    ("rcpt450@example.com", True, "SMTP 450: 4.2.1 mailbox busy, try later"),
    ("rcpt550@example.com", False, "SMTP 550: 5.1.1 no such user"),
    ("data451@example.com", True, "SMTP 451: 4.3.0 local error, try later"),
    ("data554@example.com", False, "SMTP 554: 5.7.1 message refused: SECRET policy text"),
    ("rcpt421@example.com", True, "unreachable: SMTP 421: 4.3.2 shutting down"),
]


@pytest.mark.parametrize("to, retryable, error", ANSWERS, ids=[a[0].split("@")[0] for a in ANSWERS])
def test_smtp_answers(smtpd: Smtpd, to: str, retryable: bool, error: str) -> None:
    [result] = send(smtpd.config(), [msg(to=to)])
    assert (result.status, result.retryable, result.error) == ("failed", retryable, error)


def test_a_refused_recipient_does_not_stop_the_batch(smtpd: Smtpd) -> None:
    batch = [msg(idempotency_key=f"k{i}", to=to) for i, to in
             enumerate(["a@example.com", "rcpt550@example.com", "rcpt450@example.com", "b@example.com"])]
    results = send(smtpd.config(concurrency=1), batch)
    assert [r.status for r in results] == ["sent", "failed", "failed", "sent"]
    assert len(smtpd.handler.received) == 2


class Journal:
    """A ``SendJournal`` that refuses the keys in ``refused`` (another worker took them)."""

    def __init__(self, refused: set[str]):
        self.refused = refused
        self.ended: list[tuple[str, str]] = []

    def begin(self, m: Message) -> bool:
        return m.idempotency_key not in self.refused

    def begin_soon(self, m: Message) -> Any:
        return lambda: self.begin(m)

    def end(self, m: Message, result: Any) -> None:
        self.ended.append((m.idempotency_key, result.status))


def test_a_message_the_journal_refuses_is_not_sent_and_the_next_one_is(
        smtpd: Smtpd, monkeypatch: pytest.MonkeyPatch) -> None:
    pipelined: list[str] = []
    original = SmtpChannel._pipelined

    def spy(self: SmtpChannel, conn: Any, sender: str, to: str, *rest: Any) -> bool:
        pipelined.append(to)
        return original(self, conn, sender, to, *rest)

    monkeypatch.setattr(SmtpChannel, "_pipelined", spy)
    batch = [msg(idempotency_key=f"k{i}", to=f"c{i}@example.com") for i in range(3)]
    channel = SmtpChannel.from_dict(smtpd.config(concurrency=1))
    journal = Journal({"k1"})
    try:
        results = channel.send(batch, journal=journal)
    finally:
        channel.close()
    assert [r.status for r in results] == ["sent", "failed", "sent"]
    assert results[1].retryable and "another worker" in (results[1].error or "")
    assert sorted(rcpt[0] for _, rcpt, _ in smtpd.handler.received) == ["c0@example.com", "c2@example.com"]
    assert journal.ended == [("k0", "sent"), ("k2", "sent")]
    offered = isinstance(smtpd.handler, PipeliningMailbox)
    assert pipelined == ([m.to for m in batch] if offered else [])


def test_unreachable_server_is_retryable_and_stops_the_batch() -> None:
    config = {"type": "smtp", "host": "127.0.0.1", "port": free_port(), "security": "none",
              "from_address": "news@acme.example", "concurrency": 1}
    results = send(config, [msg(idempotency_key=f"k{i}") for i in range(3)])
    assert results[0].retryable and results[0].error == "unreachable: ConnectionRefusedError"
    assert [r.error for r in results[1:]] == ["not attempted: unreachable: ConnectionRefusedError"] * 2


def test_a_silent_server_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    timeouts: list[float] = []
    connect = socket.create_connection

    def spied(address: Any, timeout: Any = None, *args: Any, **kw: Any) -> socket.socket:
        timeouts.append(timeout)
        return connect(address, timeout, *args, **kw)

    monkeypatch.setattr(socket, "create_connection", spied)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        config = {"type": "smtp", "host": "127.0.0.1", "port": listener.getsockname()[1], "security": "none",
                  "from_address": "news@acme.example", "timeout": 0.5}
        [result] = send(config, [msg()])
    assert timeouts and set(timeouts) == {0.5}  # the wait for the silent server was the configured one
    assert result.retryable and result.error == "unreachable: time-out after 0.5 s"


# -- TLS, AUTH and the password ----------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"mailer", b"s3cret-pw")
    return AuthResult(success=ok, handled=False)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_and_login_with_the_password_from_the_environment(
        cert: tuple[Path, Path], security: str, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(*cert)
    kw: dict[str, Any] = {"authenticator": authenticator, "auth_required": True}
    if security == "starttls":
        kw.update(tls_context=tls, require_starttls=True)
    else:  # implicit TLS: aiosmtpd does not see it as TLS for its AUTH rule, so lift the rule
        kw.update(ssl_context=tls, auth_require_tls=False)
    server = Smtpd(Mailbox(), **kw)
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret-pw")
    config = server.config(security=security, username="mailer", password_env="SMTP_PASSWORD",
                           ca_file=str(cert[0]))
    try:
        channel = SmtpChannel.from_dict(config)
        assert "s3cret-pw" not in repr(channel) + repr(channel.__dict__)
        assert "password=**********" in repr(channel)
        [result] = channel.send([msg()])
        channel.close()
        assert result.status == "sent", result.error
        assert len(server.handler.received) == 1
        monkeypatch.setenv("SMTP_PASSWORD", "wrong")
        [bad] = send(config, [msg(idempotency_key="k2")])
        assert bad.retryable and (bad.error or "").startswith("unreachable: SMTP 535 at connect")
        [unverified] = send({**config, "ca_file": None}, [msg(idempotency_key="k3")])
        assert unverified.retryable and "SSLCertVerificationError" in (unverified.error or "")
    finally:
        server.stop()
    assert "s3cret-pw" not in caplog.text


def test_missing_password_variable_is_named(smtpd: Smtpd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_PW", raising=False)
    with pytest.raises(PluginError, match="NO_SUCH_PW"):
        SmtpChannel.from_dict(smtpd.config(username="u", password_env="NO_SUCH_PW"))


def test_config_is_closed_and_checked() -> None:
    with pytest.raises(ValidationError):
        SmtpChannel.config_model.model_validate({"type": "smtp", "from_address": "no address here"})
    with pytest.raises(ValidationError):
        SmtpChannel.config_model.model_validate({"type": "smtp", "from_address": "a@b.c", "pasword": "x"})


# -- the connection pool ------------------------------------------------------------------------


def test_pool_sends_concurrently_over_reused_connections() -> None:
    # each message is held until four were in the server at once (one at a time, each would wait
    # out the 30 s bound and max_active stay 1): no wall-clock figure involved
    server = Smtpd(Mailbox(gather=4))
    channel = SmtpChannel.from_dict(server.config(concurrency=4, timeout=60))
    try:
        results = channel.send([msg(idempotency_key=f"k{i}", to=f"c{i}@example.com") for i in range(8)])
        assert [r.status for r in results] == ["sent"] * 8
        assert server.handler.max_active == 4
        results = channel.send([msg(idempotency_key=f"j{i}", to=f"d{i}@example.com") for i in range(8)])
        assert [r.status for r in results] == ["sent"] * 8
        assert len(server.handler.peers) == 4  # the second batch reused the first batch's connections
    finally:
        channel.close()
        server.stop()


def test_compose_is_the_same_for_every_email_channel() -> None:
    from ceap.channels.email_smtp import SmtpConfig

    config = SmtpConfig(from_address="news@acme.example")
    built = compose(msg(html="<p>x</p>"), config)
    assert built["Message-ID"] == message_id(msg(), "acme.example")
    assert built.get_content_type() == "multipart/alternative"


# -- SES ----------------------------------------------------------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "AKIATEST", "AWS_SECRET_ACCESS_KEY": "test-secret",
                        "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


SES = {"type": "ses", "region": "eu-west-1", "from_address": "Acme <news@acme.example>"}

SES_ERRORS = [  # code, HTTP status, retryable
    ("MessageRejected", 400, False),
    ("MailFromDomainNotVerifiedException", 400, False),
    ("AccountSuspendedException", 400, False),
    ("TooManyRequestsException", 429, True),
    ("LimitExceededException", 400, True),
    ("SendingPausedException", 400, True),
    ("InternalFailure", 500, True),
]


def test_ses_sends_the_raw_mime_message(aws: None) -> None:
    from botocore.stub import ANY, Stubber

    channel = __import__("ceap.channels.email_ses", fromlist=["SesChannel"]).SesChannel.from_dict(
        {**SES, "configuration_set": "marketing"})
    m = msg(html="<p>hi</p>", headers=UNSUB)
    with Stubber(channel._client) as stub:
        stub.add_response("send_email", {"MessageId": "0100018c-ses-id"},
                          {"FromEmailAddress": "Acme <news@acme.example>",
                           "Destination": {"ToAddresses": ["c1@example.com"]},
                           "Content": {"Raw": {"Data": ANY}}, "ConfigurationSetName": "marketing"})
        [result] = channel.send([m])
        stub.assert_no_pending_responses()
    assert (result.status, result.provider_id) == ("sent", "0100018c-ses-id")


@pytest.mark.parametrize("code, status, retryable", SES_ERRORS, ids=[e[0] for e in SES_ERRORS])
def test_ses_errors(aws: None, code: str, status: int, retryable: bool) -> None:
    from botocore.stub import Stubber

    from ceap.channels.email_ses import SesChannel

    channel = SesChannel.from_dict({**SES, "concurrency": 1})
    with Stubber(channel._client) as stub:
        stub.add_client_error("send_email", service_error_code=code, http_status_code=status)
        [result] = channel.send([msg()])
    assert (result.status, result.retryable, result.error) == ("failed", retryable, f"SES {code}")
    assert (result.retry_after is not None) is retryable


def test_ses_conformance_and_request_shape_on_a_local_endpoint(aws: None, tmp_path: Path) -> None:
    from ceap.channels.email_ses import SesChannel

    with ProviderServer() as server:
        server.default = lambda r: Reply(200, {"MessageId": f"ses-{len(server.requests)}"})
        config = {**SES, "endpoint_url": server.url, "sent_keys": "sent.db"}
        check_registration("channel", "ses", SesChannel)
        check_channel(SesChannel, config, PluginContext(base_dir=tmp_path),
                      make_messages(3, to=lambda i: f"c{i}@example.com", channel="ses"))
        server.reset()
        _, [call] = run_case(server, SesChannel, Case(
            "shape", {**SES, "endpoint_url": server.url}, [Reply(200, {"MessageId": "m-1"})],
            path="/v2/email/outbound-emails",
            message={"to": "c1@example.com", "headers": UNSUB},
            request={"method": "POST", "json.Destination.ToAddresses": ["c1@example.com"]},
            result={"status": "sent", "provider_id": "m-1"}))
        raw = __import__("base64").b64decode(call.json()["Content"]["Raw"]["Data"])
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert call.headers["authorization"].startswith("AWS4-HMAC-SHA256")
    assert "test-secret" not in repr(SesChannel.from_dict(SES))


def test_ses_without_boto3_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from ceap.channels.email_ses import SesChannel

    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(PluginError, match=r"pip install 'ceap\[ses\]'"):
        SesChannel.from_dict(SES)


# -- end to end: the dispatcher ------------------------------------------------------------------


def test_dispatcher_sends_each_candidate_once_through_smtp(smtpd: Smtpd, tmp_path: Path) -> None:
    from ceap.delivery.dispatcher import Dispatcher
    from ceap.delivery.profiles import upsert_profiles
    from ceap.model import CandidateQuery, RunRecord, utcnow
    from ceap.store import open_store
    from ceap.testing.doubles import make_candidates

    n = 60
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    now = utcnow()
    store.write_run(RunRecord("r1", "default", "win_back", "succeeded", now),
                    make_candidates(n, now=now, program="win_back", channels=["email"],
                                    category="transactional"))
    upsert_profiles(store, pa.table({"customer_id": [f"c{i}" for i in range(n)],
                                     "email": [f"c{i}@example.com" for i in range(n)]}), "default")
    context = PluginContext(base_dir=tmp_path)
    channel = SmtpChannel.from_dict(smtpd.config(sent_keys="sent.db"), context)
    try:
        stats = Dispatcher(store, {"email": channel}, batch_size=25).run()
        again = Dispatcher(store, {"email": channel}).run()
    finally:
        channel.close()
    assert (stats.claimed, stats.sent, again.attempted) == (n, n, 0)
    received = smtpd.handler.received
    assert sorted(r[0] for _, r, _ in received) == sorted(f"c{i}@example.com" for i in range(n))
    assert len({m["Message-ID"] for _, _, m in received}) == n
    assert all(m["Subject"] == "Win back" for _, _, m in received)
    assert {c.status for c in store.candidates(CandidateQuery(limit=1000, include_expired=True))} == {"sent"}
    store.close()

