"""A small project with digest programs, for the digest tests: a comments CSV, its
programs, templates, profiles, and a dispatcher with an injected clock."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from ceap.channels.base import Channel
from ceap.delivery.delivery_config import DeliveryConfig
from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.policies import default_policies
from ceap.delivery.profiles import upsert_profiles
from ceap.delivery.templates import TemplateRenderer
from ceap.model import Candidate, CandidateQuery
from ceap.plugin import PluginContext
from ceap.runtime.batch import run_program
from ceap.spec.loading import parse_program
from ceap.spec.program import ProgramSpec
from ceap.store import Store

SECRET = "test-signing-secret-of-32-chars-x"
DIGEST_TEMPLATE = {
    "email": {
        "subject": "{{ digest.count }} new comment(s)",
        "text": ("Hello {{ profile.attributes.first_name | default('there') }},\n"
                 "{% for item in digest.items %}- {{ item.payload.author }}: {{ item.payload.text }}\n"
                 "{% endfor %}{% if digest.more %}and {{ digest.more }} more\n{% endif %}"
                 "Unsubscribe: {{ unsubscribe_url }}"),
    },
    "default": {
        "title": "{{ digest.count }} new comment(s)",
        "body": ("{% for item in digest.items %}{{ item.payload.author }}; {% endfor %}"
                 "{% if digest.more %}and {{ digest.more }} more{% endif %}"),
    },
}


def comments_program(digest: dict[str, Any], channels: list[str], **action: Any) -> dict[str, Any]:
    return {
        "name": "comments",
        "source": {"type": "csv", "path": "comments.csv", "subject_id": "comment_id"},
        "selection": {"one_per_customer": False},
        "action": {"type": "inform", "channels": channels, "template": "comments_digest",
                   "payload_columns": ["author", "text"], "digest": digest, **action},
    }


class DigestProject:
    """A project folder in ``root`` with the comments program and its templates."""

    def __init__(self, root: Path, store: Store, digest: dict[str, Any], channels: list[str],
                 delivery: DeliveryConfig | None = None):
        self.root, self.store = root, store
        (root / "templates").mkdir(exist_ok=True)
        (root / "templates" / "comments_digest.yaml").write_text(yaml.safe_dump(DIGEST_TEMPLATE))
        (root / "templates" / "receipt.yaml").write_text(yaml.safe_dump(
            {"default": {"title": "Receipt", "body": "Your receipt {{ payload.n }}"}}))
        self.spec: ProgramSpec = parse_program(comments_program(digest, channels))
        self.delivery = delivery or DeliveryConfig.model_validate(
            {"templates": {"unsubscribe_url": "https://acme.example/u"}})
        self.comments: list[str] = []

    def comment(self, customer: str, comment_id: str, author: str, text: str) -> None:
        self.comments.append(f"{customer},{comment_id},{author},{text}")

    def run(self, now: datetime, spec: ProgramSpec | None = None) -> None:
        (self.root / "comments.csv").write_text(
            "\n".join(["customer_id,comment_id,author,text", *self.comments]) + "\n")
        run_program(spec or self.spec, self.store, PluginContext(base_dir=self.root), now=now)

    def profiles(self, rows: dict[str, dict[str, Any]]) -> None:
        ids = list(rows)
        columns = sorted({k for r in rows.values() for k in r})
        upsert_profiles(self.store, pa.table({"customer_id": ids,
                                              **{c: [rows[i].get(c) for i in ids] for c in columns}}),
                        "default")

    def dispatcher(self, channels: dict[str, Channel[Any]], clock: Any,
                   programs: dict[str, ProgramSpec] | None = None) -> Dispatcher:
        renderer = TemplateRenderer(self.root / "templates", self.delivery, secret=SECRET, clock=clock)
        return Dispatcher(self.store, channels, programs=programs or {"comments": self.spec},
                          policies=default_policies(self.delivery), renderer=renderer, clock=clock)


def candidates(store: Store, **kw: Any) -> list[Candidate]:
    return store.candidates(CandidateQuery(limit=10_000, include_expired=True, **kw))


def by_status(store: Store) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in candidates(store):
        out[c.status] = out.get(c.status, 0) + 1
    return out
