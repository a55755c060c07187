"""Program spec and project config validation: bad input gets a clear, located error."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import pytest

from ceap.connectors.base import Connector, ConnectorConfig
from ceap.errors import SpecError
from ceap.filters.base import Filter, FilterConfig
from ceap.registry import Registry, default_registry
from ceap.spec import load_program, load_project, parse_program
from tests.helpers import base_program, write_program


def issues(exc: pytest.ExceptionInfo[SpecError]) -> dict[str, str]:
    return dict(exc.value.issues)


def test_valid_program_gets_defaults_and_name_from_file(tmp_path: Path) -> None:
    spec = base_program()
    del spec["name"]
    program = load_program(write_program(tmp_path / "big_carts.yaml", spec))
    assert program.name == "big_carts"
    assert program.mode == "live"
    assert program.selection.one_per_customer is True
    assert program.selection.dedup_window.total_seconds() == 86400
    assert program.filters[0].type == "expression"  # defaulted from `expr`
    assert program.source.type == "csv"
    assert program.experiment.holdout == 0.0


def test_misspelled_field_is_named_with_a_suggestion(tmp_path: Path) -> None:
    spec = base_program(selection={"treshold": 0.3})
    with pytest.raises(SpecError) as exc:
        load_program(write_program(tmp_path / "p.yaml", spec))
    assert issues(exc) == {"selection.treshold": "unknown field (did you mean 'threshold'?)"}
    assert str(exc.value).startswith(f"{tmp_path / 'p.yaml'}: selection.treshold: unknown field")


def test_misspelled_field_inside_a_plugin_config(tmp_path: Path) -> None:
    spec = base_program()
    spec["source"]["pth"] = "x.csv"
    with pytest.raises(SpecError) as exc:
        load_program(write_program(tmp_path / "p.yaml", spec))
    found = issues(exc)
    assert "source.pth" in found and "unknown field" in found["source.pth"]


def test_unknown_plugin_type_lists_installed_ones() -> None:
    spec = base_program(scorer={"type": "magic", "x": 1})
    with pytest.raises(SpecError) as exc:
        parse_program(spec)
    message = issues(exc)["scorer.type"]
    assert "unknown scorer type 'magic'" in message
    assert "lightgbm" in message and "onnx" in message


def test_missing_required_fields_are_named() -> None:
    with pytest.raises(SpecError) as exc:
        parse_program({"name": "x", "source": {"type": "csv"}})
    found = issues(exc)
    assert found["source.path"] == "required field is missing"
    assert found["action"] == "required field is missing"


def test_filter_expression_syntax_is_checked_at_validation() -> None:
    spec = base_program(filters=[{"id": "f", "expr": "cart_value > > 1"}])
    with pytest.raises(SpecError) as exc:
        parse_program(spec)
    assert "invalid SQL expression" in issues(exc)["filters[0].expr"]


def test_filter_expression_must_be_one_expression() -> None:
    spec = base_program(filters=[{"id": "f", "expr": "1); DROP TABLE x; SELECT (1"}])
    with pytest.raises(SpecError) as exc:
        parse_program(spec)
    assert "filters[0].expr" in issues(exc)


def test_duplicate_filter_ids_rejected() -> None:
    spec = base_program(filters=[{"id": "f", "expr": "a > 1"}, {"id": "f", "expr": "b > 1"}])
    with pytest.raises(SpecError, match="filter id 'f' is used twice"):
        parse_program(spec)


@pytest.mark.parametrize(("field", "value", "where"), [
    ("experiment", {"holdout": 1.5}, "experiment.holdout"),
    ("selection", {"top_k": 0}, "selection.top_k"),
    ("selection", {"dedup_window": "3 parsecs"}, "selection.dedup_window"),
    ("mode", "sometimes", "mode"),
    ("action", {"type": "shout", "channels": ["email"]}, "action.type"),
    ("action", {"type": "offer", "channels": []}, "action.channels"),
])
def test_bad_values_are_located(field: str, value: object, where: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_program(base_program(**{field: value}))
    assert where in issues(exc)


def test_durations_accept_human_spellings() -> None:
    program = parse_program(base_program(
        action={"type": "offer", "channels": ["email"], "delay": "1h", "expiry": "3d"},
        selection={"dedup_window": "7d"}))
    assert program.action.delay.total_seconds() == 3600
    assert program.action.expiry.total_seconds() == 3 * 86400
    assert program.selection.dedup_window.days == 7


def test_sql_source_needs_query_or_table() -> None:
    spec = base_program(source={"type": "sql", "connection": "warehouse"})
    with pytest.raises(SpecError, match="exactly one of 'query' and 'table'"):
        parse_program(spec)


@pytest.mark.parametrize(("text", "expected"), [
    ("name: x\nsource: [a\n", "invalid YAML"),
    ("", "file is empty"),
    ("- a\n- b\n", "expected a mapping"),
    ("name: a\nname: b\n", "duplicate key 'name'"),
])
def test_malformed_yaml_is_reported_with_its_place(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as exc:
        load_program(path)
    assert expected in str(exc.value)
    assert str(exc.value).startswith(str(path))


def test_third_party_connector_validates_like_a_builtin() -> None:
    class DemoConfig(ConnectorConfig):
        type: Literal["demo"] = "demo"
        rows: int

    class DemoConnector(Connector[DemoConfig]):
        config_model: ClassVar[type[ConnectorConfig]] = DemoConfig

    registry = Registry()
    base = default_registry()
    for kind in ("connector", "filter", "scorer"):
        for name in base.names(kind):
            registry.register(kind, name, base.get(kind, name))
    registry.register("connector", "demo", DemoConnector)
    program = parse_program(base_program(source={"type": "demo", "rows": 3}), registry=registry)
    assert isinstance(program.source, DemoConfig)
    with pytest.raises(SpecError) as exc:
        parse_program(base_program(source={"type": "demo", "rows": 3, "rowz": 1}), registry=registry)
    assert "source.rowz" in issues(exc)


def test_project_config_reads_secrets_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ceap.yaml").write_text(
        "tenant: acme\nconnections:\n  warehouse: ${WAREHOUSE_URL}\n"
        "  other: ${OTHER_URL:-sqlite:///other.db}\n")
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql://u:secret@db/w")
    project = load_project(tmp_path)
    assert project.tenant == "acme"
    assert project.connections == {"warehouse": "postgresql://u:secret@db/w",
                                   "other": "sqlite:///other.db"}
    monkeypatch.delenv("WAREHOUSE_URL")
    with pytest.raises(SpecError) as exc:
        load_project(tmp_path)
    assert issues(exc) == {"connections.warehouse": "environment variable WAREHOUSE_URL is not set"}


def test_store_url_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CEAP_STORE", raising=False)
    assert load_project(tmp_path).store_url() == "sqlite:///.ceap/ceap.db"
    (tmp_path / "ceap.yaml").write_text("store: sqlite:///from_yaml.db\n")
    project = load_project(tmp_path)
    assert project.store_url() == "sqlite:///from_yaml.db"
    monkeypatch.setenv("CEAP_STORE", "sqlite:///from_env.db")
    assert project.store_url() == "sqlite:///from_env.db"
    assert project.store_url("sqlite:///from_flag.db") == "sqlite:///from_flag.db"


def test_project_config_rejects_unknown_fields(tmp_path: Path) -> None:
    (tmp_path / "ceap.yaml").write_text("tennant: x\n")
    with pytest.raises(SpecError) as exc:
        load_project(tmp_path)
    assert issues(exc) == {"tennant": "unknown field (did you mean 'tenant'?)"}


def test_feature_expressions_and_names_are_checked_at_validation() -> None:
    with pytest.raises(SpecError) as exc:
        parse_program(base_program(features={"drop": "a + * b"}))
    assert "feature 'drop': invalid SQL expression" in issues(exc)["features"]
    with pytest.raises(SpecError) as exc:
        parse_program(base_program(features={"two words": "a + 1"}))
    assert "must be a plain identifier" in issues(exc)["features"]


def test_unknown_filter_type_is_named_even_with_one_filter_plugin() -> None:
    spec = base_program(filters=[{"id": "f", "type": "trust_score", "min": 3}])
    with pytest.raises(SpecError) as exc:
        parse_program(spec)
    assert issues(exc) == {"filters[0].type": "unknown filter type 'trust_score' (installed: expression)"}


class _ThresholdConfig(FilterConfig):
    type: Literal["threshold"] = "threshold"
    threshold: float  # a field named like the plugin's type


class _ThresholdFilter(Filter[_ThresholdConfig]):
    config_model: ClassVar[type[FilterConfig]] = _ThresholdConfig

    def sql(self) -> str:
        return f"score_input >= {self.config.threshold}"


def test_a_missing_field_named_like_its_plugin_type_is_named() -> None:
    registry = Registry.discover()
    registry.register("filter", "threshold", _ThresholdFilter)
    with pytest.raises(SpecError) as exc:
        parse_program(base_program(filters=[{"id": "t", "type": "threshold"}]), registry=registry)
    assert issues(exc) == {"filters[0].threshold": "required field is missing"}
    with pytest.raises(SpecError) as exc:
        parse_program(base_program(filters=[{"id": "t", "type": "threshold", "threshold": "high"}]),
                      registry=registry)
    assert list(issues(exc)) == ["filters[0].threshold"]


def test_a_field_valid_elsewhere_gets_no_self_suggestion() -> None:
    spec = base_program(source={"type": "sql", "connection": "w", "table": "t", "path": "x"})
    with pytest.raises(SpecError) as exc:
        parse_program(spec)
    assert issues(exc)["source.path"] == "unknown field"


def test_empty_environment_variable_takes_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ceap.yaml").write_text("store: ${STORE_URL:-sqlite:///x.db}\n")
    monkeypatch.setenv("STORE_URL", "")
    assert load_project(tmp_path).store == "sqlite:///x.db"


def test_a_broken_plugin_does_not_take_the_others_down() -> None:
    from ceap.errors import PluginError

    registry = Registry()
    for kind, name in (("connector", "csv"), ("filter", "expression"), ("scorer", "expression")):
        registry.register(kind, name, default_registry().get(kind, name))
    registry.broken[("connector", "kafka")] = "cannot load connector plugin 'kafka': boom"
    assert parse_program(base_program(), registry=registry).source.type == "csv"
    with pytest.raises(SpecError) as exc:
        parse_program(base_program(source={"type": "kafka"}), registry=registry)
    assert issues(exc) == {"source.type": "cannot load connector plugin 'kafka': boom"}
    with pytest.raises(PluginError, match="boom"):
        registry.get("connector", "kafka")


def test_an_unknown_channel_type_in_ceap_yaml_lists_every_installed_one(tmp_path: Path) -> None:
    """The list is of the installed plugins, not of those loaded so far (smtp and inapp)."""
    from ceap.delivery.setup import build_channels
    from ceap.store import open_store

    (tmp_path / "ceap.yaml").write_text("channels:\n  sms:\n    type: twilio\n")
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    try:
        with pytest.raises(SpecError) as exc:
            build_channels(load_project(tmp_path), store)
    finally:
        store.close()
    message = issues(exc)["channels.sms.type"]
    assert message.startswith("unknown channel type 'twilio' (did you mean 'twilio_sms'? installed: ")
    assert all(n in message for n in ("twilio_sms", "twilio_voice", "webhook", "fcm", "ses", "smtp"))


def realtime_program(**state: object) -> dict[str, object]:
    return base_program(source={"type": "events", "on": ["email_changed"]}, state=state)


def test_a_real_time_program_without_trigger_types_or_an_absence_timer_is_refused() -> None:
    with pytest.raises(SpecError) as exc:
        parse_program(base_program(source={"type": "events"}))
    assert issues(exc)[""].startswith("source.on: name the event types that trigger the program")
    absence = {"no_order": {"absence": {"after": "cart_updated", "missing": "order_placed"},
                            "within": "1h"}}  # timers alone run it: no trigger type needed
    assert parse_program(base_program(source={"type": "events", "on": []}, state=absence)).source.on == []


def test_misspelled_field_inside_a_state_feature_gets_a_suggestion(tmp_path: Path) -> None:
    spec = realtime_program(takeover={"sequence": {"first": "password_changed", "then": "email_changed"},
                                      "withn": "5m"})
    with pytest.raises(SpecError) as exc:
        load_program(write_program(tmp_path / "rt.yaml", spec))
    assert issues(exc) == {"state.takeover.withn": "unknown field (did you mean 'within'?)"}
    assert str(exc.value) == (f"{tmp_path / 'rt.yaml'}: state.takeover.withn: unknown field "
                              "(did you mean 'within'?)")


@pytest.mark.parametrize("kind, value, wrong, right", [
    ("sequence", {"first": "password_changed", "thn": "email_changed"}, "thn", "then"),
    ("absence", {"after": "cart_updated", "misssing": "order_placed"}, "misssing", "missing"),
])
def test_misspelled_key_of_a_sequence_or_absence_is_named(kind: str, value: dict[str, str], wrong: str,
                                                          right: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_program(realtime_program(f={kind: value, "within": "5m"}))
    assert issues(exc) == {f"state.f.{kind}.{wrong}": f"unknown field (did you mean {right!r}?)",
                           f"state.f.{kind}.{right}": "required field is missing"}


def test_a_valid_sequence_and_absence_still_load() -> None:
    spec = parse_program(realtime_program(
        takeover={"sequence": {"first": "password_changed", "then": "email_changed"}, "within": "5m"},
        abandoned={"absence": {"after": "cart_updated", "missing": "order_placed"}, "within": "1h"}))
    assert spec.state["takeover"].kind == "sequence" and spec.state["abandoned"].kind == "absence"
    with pytest.raises(SpecError) as exc:
        parse_program(realtime_program(f={"sequence": {"first": "a", "then": "b"}}))
    assert issues(exc) == {"state.f": "sequence needs within (e.g. 5m)"}


def test_misspelled_field_in_ceap_yaml_gets_a_suggestion(tmp_path: Path) -> None:
    (tmp_path / "ceap.yaml").write_text("delivery:\n  quiet_hours:\n    sms: {send_untl: '20:00'}\n")
    with pytest.raises(SpecError) as exc:
        load_project(tmp_path)
    assert issues(exc) == {"delivery.quiet_hours.sms.send_untl": "unknown field (did you mean 'send_until'?)"}


def test_discovery_lists_plugins_and_loads_each_when_first_named() -> None:
    registry = Registry.discover()
    assert {"csv", "parquet"} <= set(registry.names("connector"))
    assert registry.generation == 0  # listing the names loaded nothing
    parse_program(base_program(), registry=registry)
    loaded = registry.generation
    assert 0 < loaded < sum(len(registry.names(k)) for k in ("connector", "filter", "scorer"))
    assert len(registry.info()) > loaded  # ``ceap plugins`` loads (and checks) them all
