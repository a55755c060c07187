"""``ceap --project deploy/ceap.prod.yaml`` (docs/project-config.md): errors in the streams
and channels of that file named ``<folder>/ceap.yaml``, a file that may not exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from ceap.delivery.setup import build_channels
from ceap.errors import SpecError
from ceap.plugin import PluginContext
from ceap.realtime.setup import open_stream
from ceap.spec.project import load_project
from ceap.store import open_store

CONFIG = """\
streams:
  events: {type: embedded}
  bus: {type: redis_streams, stream: events, urll: "redis://127.0.0.1:6379/0"}
channels:
  sms: {type: twilio_sms, account_sid: AC0123456789abcdef0123456789abcdef, from_numbr: "+15550000000"}
"""


def test_errors_name_the_config_file_given(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    config = tmp_path / "deploy" / "ceap.prod.yaml"
    config.write_text(CONFIG)
    project = load_project(config)
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}", context=PluginContext(base_dir=tmp_path))
    try:
        with pytest.raises(SpecError) as err:
            open_stream(project, "bus", store)
        assert str(err.value).startswith(f"{config}: streams.bus.urll: unknown field")
        with pytest.raises(SpecError) as err:
            open_stream(project, "missing", store)
        assert str(err.value).startswith(f"{config}: streams: no stream named 'missing'")
        with pytest.raises(SpecError) as err:
            build_channels(project, store)
        assert str(err.value).startswith(f"{config}: channels.sms.from_numbr: unknown field")
    finally:
        store.close()


def test_without_a_file_the_messages_name_ceap_yaml_in_the_project(tmp_path: Path) -> None:
    project = load_project(tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}", context=PluginContext(base_dir=tmp_path))
    try:
        with pytest.raises(SpecError) as err:
            open_stream(project, "bus", store)
        where = tmp_path.resolve() / "ceap.yaml"
        assert str(err.value).startswith(f"{where}: streams: no stream named 'bus'")
    finally:
        store.close()


def test_serve_names_ingest_when_it_names_no_configured_stream(tmp_path: Path) -> None:
    """``ingest: bsu`` (docs/realtime.md): the error is at ``ingest``, where the typo is."""
    from ceap.api.server import ServeSettings, build_app

    (tmp_path / "ceap.yaml").write_text("ingest: bsu\n")
    settings = ServeSettings(project_dir=str(tmp_path), store=f"sqlite:///{tmp_path / 'c.db'}",
                             tenant=None, auth=True)
    with pytest.raises(SpecError) as err:
        build_app(settings)
    assert str(err.value) == (f"{tmp_path.resolve() / 'ceap.yaml'}: ingest: no stream named 'bsu' "
                              "(configured: events)")
