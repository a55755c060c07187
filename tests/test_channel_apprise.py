"""The Apprise bridge, through Apprise's own json:// and form:// services
pointed at a local HTTP server."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ceap.channels.apprise_bridge import AppriseChannel
from ceap.channels.base import SendResult
from ceap.errors import PluginError
from ceap.plugin import PluginContext
from ceap.testing import check_channel, check_registration, make_messages
from tests.provider_server import Case, ProviderServer, Reply, run_case, serve

pytestmark = pytest.mark.filterwarnings("ignore:.imghdr. is deprecated:DeprecationWarning")


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    yield from serve()


def json_url(server: ProviderServer, path: str = "/notify") -> str:
    return server.url.replace("http://", "json://") + path


def test_conformance(server: ProviderServer, tmp_path: Path) -> None:
    check_registration("channel", "apprise", AppriseChannel)
    check_channel(AppriseChannel, {"type": "apprise", "urls": [json_url(server)], "sent_keys": "sent.db",
                                   "allow_private": True},
                  PluginContext(base_dir=tmp_path), make_messages(3, channel="apprise"))
    assert len(server.calls("/notify")) == 5  # 3 new, 1 fresh key, 1 other tenant


CASES = [  # id, replies, result
    ("accepted", [Reply(200)], {"status": "sent", "retryable": False}),
    ("server error", [Reply(500, "SECRET")],
     {"status": "failed", "retryable": True, "error": "apprise: a service did not accept the message"}),
    ("refused", [Reply(403)], {"status": "failed", "retryable": True}),
]


@pytest.mark.parametrize("case_id, replies, result", CASES, ids=[c[0] for c in CASES])
def test_answers(server: ProviderServer, case_id: str, replies: list[Reply], result: dict[str, Any]) -> None:
    run_case(server, AppriseChannel, Case(
        case_id, {"type": "apprise", "urls": [json_url(server)], "allow_private": True}, replies,
        path="/notify", result=result,
        request={"method": "POST", "json.title": "Hello", "json.message": "Your cart misses you"}))


def test_urls_from_the_environment_all_receive(server: ProviderServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    form = server.url.replace("http://", "form://") + "/form?token=SECRET"
    monkeypatch.setenv("APPRISE_URLS", f"{json_url(server, '/a')}, {form}\n")
    channel = AppriseChannel.from_dict({"type": "apprise", "urls_env": "APPRISE_URLS", "allow_private": True})
    try:
        assert "SECRET" not in repr(channel) + repr(channel.config)
        [result] = channel.send(make_messages(1, channel="apprise"))
    finally:
        channel.close()
    assert result.status == "sent"
    assert len(server.calls("/a")) == 1
    [form_call] = server.calls("/form")
    assert form_call.form()["title"] == "Hello 0"


def test_invalid_url_names_only_the_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPRISE_URLS", "nosuchscheme://user:SECRET@host")
    with pytest.raises(PluginError, match="scheme 'nosuchscheme'") as err:
        AppriseChannel.from_dict({"type": "apprise", "urls_env": "APPRISE_URLS"})
    assert "SECRET" not in str(err.value)


def test_config_needs_urls() -> None:
    with pytest.raises(ValueError, match="urls_env or urls"):
        AppriseChannel.config_model.model_validate({"type": "apprise"})


def test_without_apprise_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)
    with pytest.raises(PluginError, match=r"pip install 'ceap\[apprise\]'"):
        AppriseChannel.from_dict({"type": "apprise", "urls": ["json://localhost/"]})


# -- the SSRF guard: Apprise connects only where a webhook may -----------------------------------


def send_one(config: dict[str, Any]) -> SendResult:
    channel = AppriseChannel.from_dict(config)
    try:
        [result] = channel.send(make_messages(1, channel="apprise"))
    finally:
        channel.close()
    return result


def by_name(server: ProviderServer, path: str = "/notify") -> str:
    """The server's URL with the name ``localhost``: checked when the connection is made."""
    return f"json://localhost:{server.url.rsplit(':', 1)[1]}{path}"


def test_a_loopback_address_is_refused_without_allow_private(server: ProviderServer) -> None:
    with pytest.raises(ValidationError, match=r"urls\n.*URL #1 \(scheme 'json'\): 127.0.0.1 is not a "
                                              r"public address \(set allow_private"):
        AppriseChannel.from_dict({"type": "apprise", "urls": [json_url(server)]})
    assert server.calls() == []


def test_a_name_resolving_to_loopback_is_refused_when_connecting(server: ProviderServer) -> None:
    result = send_one({"type": "apprise", "urls": [by_name(server)]})
    assert result.status == "failed" and not result.retryable  # permanent: a retry would be refused too
    assert result.error is not None and result.error.startswith("refused: ")
    assert "is not a public address (set allow_private" in result.error
    assert server.calls() == []  # the listener heard nothing


@pytest.mark.parametrize("url", [json_url, by_name], ids=["address", "name"])
def test_with_allow_private_the_loopback_listener_gets_the_message(server: ProviderServer,
                                                                    url: Any) -> None:
    result = send_one({"type": "apprise", "urls": [url(server)], "allow_private": True})
    assert result.status == "sent"
    [call] = server.calls("/notify")
    assert call.json()["title"] == "Hello 0"


@pytest.mark.parametrize("allow_private", [False, True])
def test_link_local_metadata_is_refused_even_with_allow_private(allow_private: bool,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError) as err:
        AppriseChannel.from_dict({"type": "apprise", "urls": ["json://169.254.169.254/latest/meta-data/"],
                                  "allow_private": allow_private})
    assert "169.254.169.254 is a link-local address" in str(err.value)
    assert "set allow_private" not in str(err.value)
    monkeypatch.setenv("APPRISE_URLS", "json://[fe80::1]/x")
    with pytest.raises(PluginError, match="URL #1 \\(scheme 'json'\\): fe80::1 is a link-local address"):
        AppriseChannel.from_dict({"type": "apprise", "urls_env": "APPRISE_URLS",
                                  "allow_private": allow_private})


@pytest.fixture
def no_link_local_traffic(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """``metadata.test`` resolves to 169.254.169.254, and no packet goes there: a connect to it
    raises the audit event a real connect raises first (where the guard may stop it), then is
    recorded as attempted and fails as an unreachable host would."""
    real_resolve, real_connect = socket.getaddrinfo, socket.socket.connect
    attempted: list[Any] = []

    def resolve(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        if host == "metadata.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", int(port or 80)))]
        return real_resolve(host, port, *args, **kw)

    def connect(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and str(address[0]).startswith("169.254."):
            sys.audit("socket.connect", self, address)
            attempted.append(address)
            raise TimeoutError("timed out (test: nothing is sent to 169.254.0.0/16)")
        real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempted


@pytest.mark.parametrize("allow_private", [False, True])
def test_a_name_resolving_to_link_local_is_refused_and_not_retried(no_link_local_traffic: list[Any],
                                                                   allow_private: bool) -> None:
    result = send_one({"type": "apprise", "urls": ["json://metadata.test/latest/meta-data/"],
                       "allow_private": allow_private})
    assert no_link_local_traffic == []
    assert result.status == "failed" and not result.retryable
    assert result.error == ("refused: 169.254.169.254 is a link-local address (cloud metadata and the "
                            "like), refused even with allow_private")


def test_redirects_are_not_followed(server: ProviderServer) -> None:
    server.route("/notify", Reply(307, headers={"Location": f"{server.url}/elsewhere"}))
    result = send_one({"type": "apprise", "urls": [json_url(server)], "allow_private": True})
    assert [c.path for c in server.calls()] == ["/notify"]
    assert result.status == "failed" and not result.retryable
    assert result.error == "HTTP 307: redirects are not followed"


def test_proxy_variables_are_not_read(server: ProviderServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with ProviderServer() as proxy:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        result = send_one({"type": "apprise", "urls": [json_url(server)], "allow_private": True})
        assert proxy.calls() == []
    assert result.status == "sent" and len(server.calls("/notify")) == 1


def test_the_guard_does_not_outlive_the_send(server: ProviderServer) -> None:
    """Outside an Apprise send, the process's connections are not checked."""
    send_one({"type": "apprise", "urls": [by_name(server)]})
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=2):
        pass
