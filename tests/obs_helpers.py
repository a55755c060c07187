"""Reading a /metrics answer in tests: sample values by name and labels."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    """The sample's value, or 0 when it is not exported (yet)."""
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def local() -> str:
    """This process's metrics, as a scrape reads them."""
    from ceap.observability.exposition import render

    return render()[0].decode()
