"""deploy/prometheus/alerts.yml: well formed, and every metric an alert names is exported."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ceap.observability.metrics import exported_names

ALERTS = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "alerts.yml"
WANTED = {"CeapDeadDeliveriesRising", "CeapAmbiguousDeliveriesHeld", "CeapWorkerLagGrowing",
          "CeapProgramNotRunOnSchedule", "CeapBreakerOpen", "CeapApiErrorRate", "CeapApiLatencyHigh"}


def rules() -> list[dict[str, object]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_every_metric_an_alert_names_is_exported() -> None:
    exported = exported_names()
    seen = set()
    for rule in rules():
        names = set(re.findall(r"\bceap_[a-z0-9_]+", str(rule["expr"])))
        assert names, rule["alert"]
        missing = names - exported
        assert not missing, f"{rule['alert']}: {sorted(missing)} not exported"
        assert rule["labels"]["severity"] in ("warning", "critical")  # type: ignore[index]
        assert rule["annotations"]["summary"]  # type: ignore[index]
        seen.add(rule["alert"])
    assert seen >= WANTED


def test_the_docs_list_every_alert_and_metric() -> None:
    docs = (ALERTS.parents[2] / "docs" / "operations.md").read_text()
    for rule in rules():
        assert f"`{rule['alert']}`" in docs, rule["alert"]
    from prometheus_client.metrics import MetricWrapperBase

    from ceap.observability import metrics

    families = [f for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)
                for f in v.describe()]
    assert len(families) == 23
    for family in families:
        name = f"{family.name}_total" if family.type == "counter" else family.name
        assert f"`{name}`" in docs, name


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus) not here")
def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
