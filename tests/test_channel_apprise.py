"""The Apprise bridge, through Apprise's own json:// and form:// services
pointed at a local HTTP server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ceap.channels.apprise_bridge import AppriseChannel
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
    check_channel(AppriseChannel, {"type": "apprise", "urls": [json_url(server)], "sent_keys": "sent.db"},
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
        case_id, {"type": "apprise", "urls": [json_url(server)]}, replies, path="/notify", result=result,
        request={"method": "POST", "json.title": "Hello", "json.message": "Your cart misses you"}))


def test_urls_from_the_environment_all_receive(server: ProviderServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    form = server.url.replace("http://", "form://") + "/form?token=SECRET"
    monkeypatch.setenv("APPRISE_URLS", f"{json_url(server, '/a')}, {form}\n")
    channel = AppriseChannel.from_dict({"type": "apprise", "urls_env": "APPRISE_URLS"})
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
