"""E-mail over SMTP.

``SmtpChannel`` sends the message ``email_mime.compose_bytes`` writes (what
``email_compose.compose`` builds: multipart/alternative text and HTML, a
Message-ID derived from tenant and key, RFC 8058 one-click unsubscribe
headers) over a pool of up to ``concurrency`` connections (default 4), one
per thread, kept open across batches; STARTTLS or implicit TLS; the password
comes from the environment variable ``password_env``. Answers: 2xx sent; 4xx
retryable, 5xx permanent; a connection that fails, drops or times out (and
421) is retryable and stops the rest of the batch.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import socket
import ssl
import threading
import time
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr

from ceap.channels.base import ChannelConfig, Message, SendResult
from ceap.channels.email_compose import (
    ONE_CLICK,
    POLICY,
    PROTECTED,
    EmailConfig,
    compose,
    has_one_click,
    message_id,
)
from ceap.channels.email_mime import ADDRESS, Composed, compose_bytes
from ceap.channels.external import UNREACHABLE, ExternalChannel, env_secret

_IDLE_CHECK = 10.0  # seconds: a connection idle longer is checked with NOOP before reuse
_LEADING_DOT = re.compile(rb"(?m)^\.")


def _quoted(address: str) -> str:
    """``smtplib.quoteaddr(address)``, without parsing a plain ``local@domain``."""
    return f"<{address}>" if ADDRESS.fullmatch(address) else smtplib.quoteaddr(address)


class SmtpConfig(EmailConfig):
    type: Literal["smtp"] = "smtp"
    host: str = Field("localhost", description="SMTP server")
    port: int | None = Field(None, ge=1, le=65535, description="default: 465 (ssl), 587 (starttls), 25")
    security: Literal["starttls", "ssl", "none"] = Field("starttls", description="TLS mode")
    username: str | None = Field(None, description="SMTP AUTH user")
    password_env: str | None = Field(None, description="environment variable holding the password")
    ca_file: str | None = Field(None, description="PEM file of CAs to trust (a private relay)")
    verify_tls: bool = Field(True, description="check the server's certificate and name")
    timeout: float = Field(30.0, gt=0, le=300, description="seconds per SMTP command")
    concurrency: int = Field(4, ge=1, le=64, description="connections in the pool (one per thread)")


def _abort(conn: smtplib.SMTP, code: int) -> None:
    """End a failed mail transaction as smtplib does: close on 421, else RSET."""
    if code == 421:
        conn.close()
        return
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        conn.rset()


def _text(exc: smtplib.SMTPResponseException) -> str:
    raw = exc.smtp_error
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())[:200]


class SmtpChannel(ExternalChannel[SmtpConfig]):
    """Sends each message over a pooled SMTP connection."""

    config_model: ClassVar[type[ChannelConfig]] = SmtpConfig
    address: ClassVar[str | None] = "email"
    hands_over: ClassVar[bool] = True  # the attempt is marked sending right before DATA
    default_rate_per_sec: ClassVar[float | None] = None  # the relay's; set rate_per_sec

    def __init__(self, config: SmtpConfig, context: Any = None):
        super().__init__(config, context)
        self._password: SecretStr | None = (env_secret(self, config.password_env, "SMTP password")
                                            if config.password_env else None)
        self._idle: list[tuple[smtplib.SMTP, float]] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        secret = ", password=**********" if self._password else ""
        return f"SmtpChannel({self.config.host}:{self._port()}, {self.config.security}{secret})"

    def _port(self) -> int:
        return self.config.port or {"ssl": 465, "starttls": 587}.get(self.config.security, 25)

    def _tls(self) -> ssl.SSLContext:
        ca = str(self.context.path(self.config.ca_file)) if self.config.ca_file else None
        tls = ssl.create_default_context(cafile=ca)
        if not self.config.verify_tls:
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        return tls

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        conn: smtplib.SMTP
        if c.security == "ssl":
            conn = smtplib.SMTP_SSL(c.host, self._port(), timeout=c.timeout, context=self._tls())
        else:
            conn = smtplib.SMTP(c.host, self._port(), timeout=c.timeout)
        if conn.sock is not None:  # each write is a whole command group or message: no Nagle wait
            with contextlib.suppress(OSError):
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if c.security == "starttls":
                conn.starttls(context=self._tls())
            if c.username:
                conn.login(c.username, self._password.get_secret_value() if self._password else "")
        except BaseException:
            conn.close()
            raise
        return conn

    def _take(self) -> smtplib.SMTP:
        with self._lock:
            conn, since = self._idle.pop() if self._idle else (None, 0.0)
        if conn is not None and time.monotonic() - since > _IDLE_CHECK:
            try:
                alive = conn.noop()[0] == 250
            except (smtplib.SMTPException, OSError):
                alive = False
            if not alive:
                conn.close()
                conn = None
        return conn if conn is not None else self._connect()

    def deliver_one(self, m: Message) -> SendResult:
        prepared = self.prepare(m)
        return prepared if isinstance(prepared, SendResult) else self.deliver_prepared(m, prepared)

    def prepare(self, m: Message) -> Composed | SendResult:
        """The message's bytes (composed before the attempt is marked sending), or the
        permanent failure of one that cannot be sent."""
        try:
            return compose_bytes(m, self.config)
        except ValueError as exc:
            return SendResult(m.idempotency_key, "failed", error=str(exc))

    def deliver_prepared(self, m: Message, msg: Composed) -> SendResult:
        key = m.idempotency_key
        try:
            conn = self._take()
        except smtplib.SMTPResponseException as exc:
            return SendResult(key, "failed", retryable=True,
                              error=f"{UNREACHABLE} SMTP {exc.smtp_code} at connect: {_text(exc)}")
        except (smtplib.SMTPException, OSError) as exc:
            return self._unreachable(key, exc)
        keep = True
        try:
            if not self._transfer(conn, msg, m.to or ""):
                return SendResult(key, "failed", retryable=True,
                                  error="not attempted: another worker took it over")
            return SendResult(key, "sent", provider_id=msg.message_id)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()), (550, b"refused"))
            keep = code != 421
            return self._refused(key, smtplib.SMTPResponseException(code, text))
        except smtplib.SMTPResponseException as exc:
            keep = exc.smtp_code != 421
            return self._refused(key, exc)
        except smtplib.SMTPServerDisconnected as exc:
            keep = False
            return self._unreachable(key, exc)
        except smtplib.SMTPException as exc:  # e.g. SMTPUTF8 needed but not offered (an OSError too)
            return SendResult(key, "failed", error=f"{type(exc).__name__}: {exc}")
        except OSError as exc:
            keep = False
            return self._unreachable(key, exc)
        finally:
            if keep and conn.sock is not None:  # not closed (a 421, an abandoned DATA)
                with self._lock:
                    self._idle.append((conn, time.monotonic()))
            else:
                conn.close()

    def _transfer(self, conn: smtplib.SMTP, msg: Composed, to: str) -> bool:
        """``conn.sendmail(sender, [to], msg.data)``, raising what it raises, with the point of
        no return (``hand_over``: the attempt is marked sending) after the envelope (MAIL FROM,
        RCPT TO: nothing the server can accept yet) and before DATA. False: not sent. The mark
        is asked for once RCPT TO is written, so that its commit overlaps the server's reply."""
        sender = self.config.sender
        conn.ehlo_or_helo_if_needed()
        utf8, data = msg.utf8, msg.data
        if utf8 and not conn.has_extn("smtputf8"):
            raise smtplib.SMTPNotSupportedError(
                "One or more source or delivery addresses require internationalized email support, "
                "but the server does not advertise the required SMTPUTF8 capability")
        options: list[str] = []
        if conn.does_esmtp:
            if conn.has_extn("size"):
                options.append(f"size={len(data)}")
            if utf8:
                options += ["SMTPUTF8", "BODY=8BITMIME"]
        if conn.has_extn("pipelining"):
            return self._pipelined(conn, sender, to, options, data)
        code, answer = conn.mail(sender, options)
        if code != 250:
            _abort(conn, code)
            raise smtplib.SMTPSenderRefused(code, answer, sender)
        conn.putcmd("rcpt", f"TO:{smtplib.quoteaddr(to)}")  # conn.rcpt(to), with the mark asked
        self.hand_over_soon()  # for once the recipient is on its way: the commit overlaps the reply
        code, answer = conn.getreply()
        if code not in (250, 251):
            _abort(conn, code)
            raise smtplib.SMTPRecipientsRefused({to: (code, answer)})
        try:
            go = self.hand_over()
        except BaseException:
            _abort(conn, 0)
            raise
        if not go:
            _abort(conn, 0)
            return False
        code, answer = conn.data(data)
        if code != 250:
            _abort(conn, code)
            raise smtplib.SMTPDataError(code, answer)
        return True

    def _pipelined(self, conn: smtplib.SMTP, sender: str, to: str, options: list[str],
                   data: bytes) -> bool:
        """``_transfer`` for a server that offers PIPELINING (RFC 2920): MAIL FROM, RCPT TO and
        DATA go in one write and their three replies are read after it (one round trip
        instead of three); the mark is asked for at once and waited for before the body,
        whose final dot is the point of no return. A transaction that cannot go on once the
        server said 354 can only be ended by closing the connection (never by a dot)."""
        if "SMTPUTF8" in options:  # as SMTP.mail does
            conn.command_encoding = "utf-8"
        extra = " " + " ".join(options) if options else ""
        conn.send(f"mail FROM:{_quoted(sender)}{extra}\r\nrcpt TO:{_quoted(to)}\r\ndata\r\n")
        self.hand_over_soon()  # the commit overlaps the round trip
        # after a 421 the server closes the connection: no further reply is read
        mail, mail_text = conn.getreply()
        rcpt, rcpt_text = conn.getreply() if mail != 421 else (0, b"")
        ready, ready_text = conn.getreply() if 421 not in (mail, rcpt) else (0, b"")
        if mail != 250 or rcpt not in (250, 251) or ready != 354:
            if ready == 354:  # the server waits for a body that must not come
                conn.close()
            else:
                _abort(conn, 421 if 421 in (mail, rcpt, ready) else ready)
            if mail != 250:
                raise smtplib.SMTPSenderRefused(mail, mail_text, sender)
            if rcpt not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({to: (rcpt, rcpt_text)})
            raise smtplib.SMTPDataError(ready, ready_text)
        try:
            go = self.hand_over()
        except BaseException:
            conn.close()
            raise
        if not go:
            conn.close()
            return False
        body = _LEADING_DOT.sub(b"..", data) if b"\n." in data or data[:1] == b"." else data  # as SMTP.data
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        conn.send(body + b".\r\n")
        code, answer = conn.getreply()
        if code != 250:
            _abort(conn, code)
            raise smtplib.SMTPDataError(code, answer)
        return True

    def _unreachable(self, key: str, exc: BaseException) -> SendResult:
        timed_out = isinstance(exc, TimeoutError) or "timed out" in str(exc)  # smtplib wraps time-outs
        what = f"time-out after {self.config.timeout:g} s" if timed_out else type(exc).__name__
        return SendResult(key, "failed", retryable=True, error=f"{UNREACHABLE} {what}")

    @staticmethod
    def _refused(key: str, exc: smtplib.SMTPResponseException) -> SendResult:
        code = exc.smtp_code
        if code == 421:  # the server is closing the connection
            return SendResult(key, "failed", retryable=True, error=f"{UNREACHABLE} SMTP 421: {_text(exc)}")
        return SendResult(key, "failed", error=f"SMTP {code}: {_text(exc)}", retryable=400 <= code < 500)

    def close(self) -> None:
        super().close()
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()


__all__ = ["ONE_CLICK", "POLICY", "PROTECTED", "EmailConfig", "SmtpChannel", "SmtpConfig", "compose",
           "compose_bytes", "has_one_click", "message_id"]
