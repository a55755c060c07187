"""The bytes of an e-mail, written directly: what ``email_compose.compose`` builds
and the ``email`` package's generator would write, at a fraction of the CPU.

The ``email`` package parses every header into an object, refolds it and walks
the message tree through a generator: about half a millisecond a message.
``compose_bytes`` writes the common shape itself (text, or text and HTML as
multipart/alternative, UTF-8) and takes from the ``email`` package only what
it does not handle:

* headers that repeat (From, Reply-To; Date, once a second) are folded by the
  ``email`` package once and cached as bytes;
* a header value of printable ASCII (no leading or trailing blank, no
  ``=?``, short enough for one line) is written as it is, as the package
  writes it; a non-ASCII unstructured value (Subject, the renderer's headers)
  becomes RFC 2047 encoded-words (UTF-8, base64, each line at most 78
  characters); a plain ``local@domain`` To address is written as it is;
  anything else (an address with a display name or quotes, control
  characters, a very long value) is folded by the ``email`` package;
* bodies are UTF-8, ``7bit`` when ASCII, ``8bit`` otherwise, with CRLF line
  ends, as the ``email`` package does when every line fits in 998 bytes;
  with a longer line, quoted-printable or base64 (the shorter), encoded by
  ``binascii``;
* a message with a non-ASCII envelope address (RFC 6532, SMTPUTF8: raw UTF-8
  headers) is composed by the ``email`` package entirely.

Dot-stuffing is the SMTP layer's. Same checks and errors as ``compose``: a
header value with a line break, or a header the channel owns, raises
ValueError.
"""

from __future__ import annotations

import binascii
import io
import random
import re
import time
from dataclasses import dataclass
from email.generator import BytesGenerator
from email.headerregistry import BaseHeader
from functools import lru_cache

from ceap.channels.base import Message
from ceap.channels.email_compose import (
    POLICY,
    EmailConfig,
    check,
    compose,
    date_header,
    message_id,
    protected,
    single_line,
)

CRLF = b"\r\n"
#: the generator's policy: CRLF line ends (folding as the SMTP and SES channels send)
_WIRE = POLICY.clone(linesep="\r\n")
_MAX = 998  # RFC 5322 line length, as POLICY.max_line_length
#: printable ASCII, no blank at either end: written as it is (as the email package folds it)
_PLAIN = re.compile(r"[!-~](?:[ -~]*[!-~])?")
_NAME = re.compile(r"[!-9;-~]+")  # a header name (RFC 5322 ftext)
#: a bare address the email package writes unchanged (dot-atoms on both sides)
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_ID_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_LINE = 76  # RFC 2047: a line holding encoded-words is at most 76 characters long
_WORD_BYTES = 45  # text per encoded-word on a continuation line: " =?utf-8?b?<60>?=", 73 characters
_TEXT = b'; charset="utf-8"\r\nContent-Transfer-Encoding: '
_date: tuple[int, bytes] = (0, b"")


@dataclass(frozen=True)
class Composed:
    """An e-mail ready for the wire: CRLF line ends, not dot-stuffed."""

    data: bytes
    message_id: str
    #: needs SMTPUTF8 (a non-ASCII envelope address; raw UTF-8 headers)
    utf8: bool = False


def folded(name: str, value: str | BaseHeader) -> bytes:
    """``name: value`` as the email package's generator writes it (CRLF-terminated): what
    ``msg[name] = value`` stores, folded; ValueError for a value with a line break (also a
    trailing one, which the email package would write as a bare LF)."""
    if isinstance(value, str):
        single_line(value)
    header = value if isinstance(value, BaseHeader) else POLICY.header_store_parse(name, value)[1]
    return _WIRE.fold_binary(name, header)  # type: ignore[no-any-return]


def unstructured(name: str, value: str) -> bytes:
    """A Subject or a renderer's header: as it is when printable ASCII, encoded-words when
    other text, the email package otherwise."""
    if len(value) + len(name) < _MAX - 2 and "=?" not in value:
        if _PLAIN.fullmatch(value):
            return b"%s: %s\r\n" % (name.encode("ascii"), value.encode("ascii"))
        if not value.isascii() and value.isprintable() and value.strip() == value:
            return b"%s: %s\r\n" % (name.encode("ascii"), encoded_words(value, name))
    return folded(name, value)


def encoded_words(text: str, name: str = "Subject") -> bytes:
    """RFC 2047 encoded-words (UTF-8, base64) for the value of header ``name``: each holds
    whole characters and its line at most 76 characters (the next words on continuation
    lines; whitespace between encoded-words is not part of the text)."""
    words: list[bytes] = []
    # the first line also holds "Name: " (a very long name: a short first word, past 76)
    budget = max(_word_bytes(_LINE - len(name) - 2), 12)
    chunk: list[str] = []
    size = 0
    for char in text:
        n = len(char.encode("utf-8"))
        if size + n > budget and chunk:
            words.append(_word("".join(chunk)))
            chunk, size, budget = [], 0, _WORD_BYTES
        chunk.append(char)
        size += n
    if chunk:
        words.append(_word("".join(chunk)))
    return b"\r\n ".join(words)


def _word_bytes(room: int) -> int:
    """Text bytes an encoded-word of at most ``room`` characters holds."""
    return (room - len(b"=?utf-8?b??=")) // 4 * 3


def _word(text: str) -> bytes:
    return b"=?utf-8?b?%s?=" % binascii.b2a_base64(text.encode("utf-8"), newline=False)


@lru_cache(maxsize=256)
def _constant(name: str, value: str) -> bytes:
    """From, Reply-To: folded once per config."""
    return folded(name, value)


def _date_line() -> bytes:
    global _date
    now = int(time.time())
    at, line = _date
    if at != now or not line:
        line = folded("Date", date_header())
        _date = (now, line)
    return line


def encode_body(text: str) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding, payload with CRLF line ends) of a UTF-8 text part: as the
    email package chooses them (7bit, 8bit; quoted-printable or base64 for a line over 998
    bytes), line ends normalized to CRLF, ending with one."""
    lines = text.encode("utf-8").splitlines()
    if not lines or max(map(len, lines)) <= _MAX:
        body = CRLF.join(lines) + CRLF
        return (b"7bit" if body.isascii() else b"8bit"), body
    raw = b"\n".join(lines) + b"\n"
    qp = binascii.b2a_qp(raw, istext=True)  # lines <= 76, soft breaks, \n line ends as given
    if len(qp) <= len(raw) * 4 // 3 + len(raw) // 57 + 2:  # what base64 would take, about
        return b"quoted-printable", qp.replace(b"\n", CRLF)
    return b"base64", b"".join(binascii.b2a_base64(raw[i:i + 57]) for i in range(0, len(raw), 57)
                               ).replace(b"\n", CRLF)


def _plain_address(to: str) -> bool:
    return len(to) < 900 and ADDRESS.fullmatch(to) is not None


def _plain_id(mid: str, domain: str) -> bool:
    return len(mid) < 900 and _ID_DOMAIN.fullmatch(domain) is not None


def _part(kind: bytes, text: str) -> tuple[bytes, bytes]:
    cte, body = encode_body(text)
    return b"Content-Type: text/" + kind + _TEXT + cte + b"\r\n\r\n", body


def compose_bytes(m: Message, config: EmailConfig) -> Composed:
    """The wire bytes of ``compose(m, config)``; ValueError if it may not or cannot be sent."""
    check(m, config)
    to = m.to or ""
    mid = message_id(m, config.id_domain)
    if not (to.isascii() and config.sender.isascii()):
        return Composed(_generated(m, config), mid, utf8=True)
    out = [unstructured("Subject", m.title), _constant("From", config.from_address),
           b"To: %s\r\n" % to.encode("ascii") if _plain_address(to) else folded("To", to),
           _constant("Reply-To", config.reply_to) if config.reply_to else b"", _date_line(),
           (b"Message-ID: %s\r\n" % mid.encode("ascii") if _plain_id(mid, config.id_domain)
            else folded("Message-ID", mid))]
    for name, value in m.headers.items():
        protected(name)
        out.append(unstructured(name, value) if _NAME.fullmatch(name) else folded(name, value))
    out.append(b"MIME-Version: 1.0\r\n")
    text = _part(b"plain", m.body or m.title)
    if not m.html:
        out += text
        return Composed(b"".join(out), mid)
    html = _part(b"html", m.html)
    boundary = b"=_%016x" % random.getrandbits(64)
    while boundary in text[1] or boundary in html[1]:  # 7bit or 8bit text may hold anything
        boundary = b"=_%016x" % random.getrandbits(64)
    out += [b'Content-Type: multipart/alternative; boundary="', boundary, b'"\r\n\r\n--', boundary,
            CRLF, *text, b"\r\n--", boundary, CRLF, *html, b"\r\n--", boundary, b"--\r\n"]
    return Composed(b"".join(out), mid)


def _generated(m: Message, config: EmailConfig) -> bytes:
    """``compose`` flattened as ``smtplib.send_message`` would, with RFC 6532 UTF-8 headers."""
    msg = compose(m, config)
    with io.BytesIO() as buffer:
        BytesGenerator(buffer, policy=msg.policy.clone(utf8=True)).flatten(  # type: ignore[call-arg]
            msg, linesep="\r\n")
        return buffer.getvalue()


__all__ = ["ADDRESS", "Composed", "compose_bytes", "encode_body", "encoded_words", "folded", "unstructured"]
