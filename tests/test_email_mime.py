"""``compose_bytes`` (the e-mail written without the ``email`` package) against
``compose`` flattened by the ``email`` package's generator, as the SMTP channel
sent it before: both are parsed with the stdlib parser and must say the same
(headers, MIME structure, each part's type, charset and text), and the new
bytes must be wire-clean (CRLF line ends, lines <= 998 bytes, ASCII unless the
message needs SMTPUTF8). Header values the fast path writes itself must be
byte-identical to the ``email`` package's folding."""

from __future__ import annotations

import email
import email.policy
import io
import socket
from collections.abc import Iterator
from email.generator import BytesGenerator
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ceap.channels.base import Message
from ceap.channels.email_compose import compose
from ceap.channels.email_mime import compose_bytes, encode_body, encoded_words, folded, unstructured
from ceap.channels.email_smtp import SmtpChannel, SmtpConfig
from tests.test_channel_email import Mailbox, PipeliningMailbox, Smtpd

UNSUB = {"List-Unsubscribe": "<https://acme.example/u/abc?t=" + "x" * 300 + ">, <mailto:u-abc@acme.example>",
         "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: unicode text without surrogates (which no UTF-8 e-mail can carry)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)


def msg(**kw: Any) -> Message:
    base: dict[str, Any] = {"tenant_id": "acme", "idempotency_key": "acme:k1:email", "customer_id": "c1",
                            "program": "win_back", "channel": "email", "title": "We miss you",
                            "body": "Come back for 10% off.", "to": "c1@example.com"}
    return Message(**{**base, **kw})


def old_bytes(m: Message, config: SmtpConfig) -> bytes:
    """What the SMTP channel sent before: ``compose`` through ``BytesGenerator``."""
    built = compose(m, config)
    utf8 = not ((m.to or "").isascii() and config.sender.isascii())
    buffer = io.BytesIO()
    generator = (BytesGenerator(buffer, policy=built.policy.clone(utf8=True))  # type: ignore[call-arg]
                 if utf8 else BytesGenerator(buffer))
    generator.flatten(built, linesep="\r\n")
    return buffer.getvalue()


def meaning(data: bytes | EmailMessage) -> tuple[Any, ...]:
    """What a receiver reads: headers (but Date, which moves with the clock, and the part
    headers), structure, and each part's type, charset, decoded text and defects."""
    got: EmailMessage = (data if isinstance(data, EmailMessage)
                         else email.message_from_bytes(data, policy=email.policy.default))  # type: ignore[assignment]
    skip = {"date", "mime-version", "content-type", "content-transfer-encoding"}
    headers = sorted((k.lower(), str(v)) for k, v in got.items() if k.lower() not in skip)
    parts = list(got.iter_parts()) if got.is_multipart() else [got]
    content = [(p.get_content_type(), p.get_content_charset(), p.get_content(), _named(p.defects))
               for p in parts]
    header_defects = [(k, _named(v.defects)) for k, v in got.items() if getattr(v, "defects", None)]
    return headers, got.get_content_type(), content, _named(got.defects), header_defects, bool(got["Date"])


def _named(defects: Any) -> list[str]:
    return [repr(d) for d in defects]


def wire_clean(data: bytes, utf8: bool) -> None:
    assert data.endswith(b"\r\n")
    lines = data.split(b"\r\n")
    for line in lines:
        assert b"\r" not in line and b"\n" not in line, line
        assert len(line) <= 998, len(line)
    head = data.split(b"\r\n\r\n", 1)[0]
    assert utf8 or head.isascii(), head


def same(m: Message, config: SmtpConfig) -> None:
    new = compose_bytes(m, config)
    wire_clean(new.data, new.utf8)
    assert meaning(new.data) == meaning(old_bytes(m, config))
    assert new.message_id == str(compose(m, config)["Message-ID"])


CONFIG = SmtpConfig(from_address="Acme <news@acme.example>")
NAMED = SmtpConfig(from_address="\"Ärzte & Söhne, Acme\" <news@acme.example>",
                   reply_to="Hilfe <help@acme.example>")


@pytest.mark.parametrize("config", [CONFIG, NAMED, SmtpConfig(from_address="news@acme.example",
                                                               message_id_domain="mail.acme.example")])
@pytest.mark.parametrize("fields", [
    {},
    {"title": "We miss you ✓", "body": "Come back for 10 % off ✓.\nÇa vous dit ?"},
    {"title": "Скидка 10% для вас, " * 8},  # long non-ASCII subject: several encoded-words
    {"title": "a" * 1200},  # longer than a line: folded by the email package
    {"title": "  spaced   out  "},
    {"title": "=?utf-8?q?looks_encoded?="},
    {"title": "tab\there"},
    {"title": ""},
    {"title": "", "body": ""},
    {"html": "<p>Come back for <b>10%</b> off.</p>", "headers": UNSUB},
    {"html": "<p>" + "x" * 2000 + "</p>\n<p>café</p>"},  # a long ASCII-ish line: quoted-printable
    {"html": "<p>" + "日本語" * 700 + "</p>"},  # a long non-ASCII line: base64
    {"body": "line one\r\nline two\rline three\n\n.leading dot\n..two\n", "html": ".<p>dot</p>"},
    {"body": "trailing space   \nand tab\t\n" + "y" * 999},
    {"headers": {"X-Campaign": "wb-7", "X-Note": "naïve café", "x-lower": "a  b"}},
    {"to": "Ana Núñez <ana@example.com>"},
    {"to": "\"odd, name\" <c1@example.com>"},
    {"to": "c1+tag@sub.example.com"},
])
def test_same_message_as_the_email_package(config: SmtpConfig, fields: dict[str, Any]) -> None:
    same(msg(**fields), config)


def test_a_non_ascii_address_is_composed_by_the_email_package_with_utf8_headers() -> None:
    m = msg(to="ñandú@example.com", title="¡Hola!")
    new = compose_bytes(m, CONFIG)
    assert new.utf8 and "¡Hola!".encode() in new.data  # RFC 6532: raw UTF-8, no encoded-word
    assert meaning(new.data) == meaning(old_bytes(m, CONFIG))


@pytest.mark.parametrize("fields, error", [
    ({"title": "a\r\nBcc: victim@example.com"}, "linefeed"),
    ({"headers": {"X-Evil": "a\nBcc: victim@example.com"}}, "linefeed"),
    ({"headers": {"X-Evil": "a\u2028b"}}, "linefeed"),
    ({"headers": {"bcc": "victim@example.com"}}, "may not set the bcc header"),
    ({"to": None}, "no email for customer"),
])
def test_the_same_refusals(fields: dict[str, Any], error: str) -> None:
    for build in (compose, compose_bytes):
        with pytest.raises(ValueError, match=error):
            build(msg(**fields), CONFIG)


@pytest.mark.parametrize("fields", [{"headers": {"X-Evil": "trailing\n"}}, {"title": "Hi\r"},
                                    {"headers": {"X-Evil": "\n"}}])
def test_a_trailing_line_break_in_a_header_is_refused(fields: dict[str, Any]) -> None:
    """The email package alone wrote it as a bare LF in the header block (smtplib's DATA turns that
    into CRLF: an empty line, the end of the headers); refused like any other line break."""
    for build in (compose, compose_bytes):
        with pytest.raises(ValueError, match="linefeed"):
            build(msg(**fields), CONFIG)


@FUZZ
@given(title=TEXT, body=TEXT, html=st.none() | TEXT, note=TEXT)
def test_random_text_means_the_same(title: str, body: str, html: str | None, note: str) -> None:
    m = msg(title=title, body=body, html=html, headers={"X-Note": note})
    if any(v and v.splitlines() != [v] for v in (title, note)):
        # a line break in a header value is refused (the email package let a trailing one
        # through, as a bare LF in the header block)
        for build in (compose, compose_bytes):
            with pytest.raises(ValueError, match="linefeed"):
                build(m, NAMED)
        return
    new = compose_bytes(m, NAMED)
    wire_clean(new.data, new.utf8)
    assert meaning(new.data) == meaning(old_bytes(m, NAMED))


@FUZZ
@given(value=st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=1100))
def test_printable_ascii_headers_are_byte_identical(value: str) -> None:
    for name in ("Subject", "X-Campaign", "List-Unsubscribe"):
        assert unstructured(name, value) == folded(name, value)


@FUZZ
@given(text=st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=400))
def test_encoded_words_decode_to_the_text(text: str) -> None:
    for name in ("Subject", "X-" + "Long-" * 12 + "Name"):
        line = name.encode() + b": " + encoded_words(text, name) + b"\r\n\r\n"
        assert all(len(row) <= 76 for row in line.split(b"\r\n")[1:])
        assert len(line.split(b"\r\n")[0]) <= max(76, len(name) + 2 + 28)  # a long name: one short word
        got = email.message_from_bytes(line, policy=email.policy.default)
        assert str(got[name]) == text


@pytest.mark.parametrize("length", range(985, 1002))
def test_ascii_headers_near_the_line_limit_are_byte_identical(length: int) -> None:
    for name in ("Subject", "X-C"):
        value = ("word " * 250)[:length].strip() + "x"
        assert unstructured(name, value) == folded(name, value)


@pytest.mark.parametrize("address", ["c1@example.com", "first.last+tag@mail.example.co.uk",
                                     "o'brien@example.com", "x_y-z=1@a-b.example"])
def test_plain_addresses_are_written_as_the_email_package_writes_them(address: str) -> None:
    data = compose_bytes(msg(to=address), CONFIG).data
    assert folded("To", address) in data


@FUZZ
@given(text=TEXT)
def test_bodies_decode_to_the_text_with_normalized_line_ends(text: str) -> None:
    cte, payload = encode_body(text)
    part = email.message_from_bytes(b'Content-Type: text/plain; charset="utf-8"\r\n'
                                    b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n" + payload,
                                    policy=email.policy.default)
    expected = b"\n".join(text.encode().splitlines()).decode() + "\n"  # as the email package
    assert part.get_content().replace("\r\n", "\n") == expected  # type: ignore[attr-defined]


@pytest.fixture(params=["plain", "pipelining"])
def smtpd(request: pytest.FixtureRequest) -> Iterator[Smtpd]:
    server = Smtpd(PipeliningMailbox() if request.param == "pipelining" else Mailbox())
    yield server
    server.stop()


def test_what_arrives_at_a_server_means_what_the_email_package_composed(smtpd: Smtpd) -> None:
    """Through the channel (dot-stuffing, SMTP) to aiosmtpd: parsed on arrival, each message
    says what ``compose`` said."""
    config = smtpd.config(from_address="Zoë Müller <news@acme.example>", reply_to="Hilfe <help@acme.example>")
    shapes: list[dict[str, Any]] = [
        {"title": "Ärger? Nein ✓", "html": "<p>" + "x" * 1500 + "</p>", "headers": UNSUB},
        {"title": "Plain", "body": ".a leading dot\n..two\n.\nend", "html": ".<p>x</p>"},
        {"title": "長い件名" * 20, "body": "本文" * 600, "html": "<p>" + "日本語" * 700 + "</p>"},
        {"to": "Ana Núñez <c9@example.com>", "headers": {"X-Note": "naïve"}},
    ]
    messages = [msg(idempotency_key=f"acme:k{i}:email", **shape) for i, shape in enumerate(shapes)]
    channel = SmtpChannel.from_dict(config)
    try:
        results = channel.send(messages)
    finally:
        channel.close()
    assert [r.status for r in results] == ["sent"] * len(messages)
    arrived = {str(got["Message-ID"]): got for _, _, got in smtpd.handler.received}
    assert len(arrived) == len(messages)
    for m, result in zip(messages, results, strict=True):
        got = arrived[result.provider_id or ""]
        assert meaning(got) == meaning(old_bytes(m, channel.config))


def test_pooled_connections_turn_nagle_off(smtpd: Smtpd) -> None:
    """Each write is a whole command group or message: its tail must not wait for an ACK."""
    channel = SmtpChannel.from_dict(smtpd.config())
    conn = channel._take()
    try:
        assert conn.sock is not None
        assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        conn.close()
        channel.close()
