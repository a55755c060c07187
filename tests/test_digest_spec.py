"""``action.digest`` in the program YAML: what is accepted, and the ``file: field: message``
errors of what is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ceap.delivery.templates.checks import validate_program_templates
from ceap.errors import SpecError
from ceap.spec.loading import load_program
from tests.digest_helpers import comments_program


def errors(tmp_path: Path, digest: dict[str, Any], **action: Any) -> list[str]:
    path = tmp_path / "comments.yaml"
    path.write_text(yaml.safe_dump(comments_program(digest, ["email"], **action)))
    with pytest.raises(SpecError) as caught:
        load_program(path)
    return caught.value.lines()


def test_a_window_and_a_schedule_are_read(tmp_path: Path) -> None:
    path = tmp_path / "comments.yaml"
    path.write_text(yaml.safe_dump(comments_program({"window": "1h", "max_items": 5}, ["email"])))
    digest = load_program(path).action.digest
    assert digest is not None and digest.window is not None
    assert (digest.window.total_seconds(), digest.max_items) == (3600, 5)
    assert digest.key_for("comments") == "comments"
    path.write_text(yaml.safe_dump(comments_program({"key": "daily", "schedule": "daily",
                                                     "timezone": "Europe/Paris"}, ["email"])))
    digest = load_program(path).action.digest
    assert digest is not None and (digest.schedule, digest.timezone, digest.max_items) == (
        "0 0 * * *", "Europe/Paris", 10)


@pytest.mark.parametrize(("digest", "action", "expected"), [
    ({"window": "1h"}, {"category": "transactional"},
     "action.digest: a transactional message is never held in a digest (it is sent at once); "
     "remove digest or use category marketing"),
    ({"window": "1h"}, {"category": "security"},
     "action.digest: a security message is never held in a digest"),
    ({"window": "1h", "schedule": "0 9 * * *"}, {},
     "action.digest: give either window (e.g. 1h) or schedule (e.g. '0 9 * * *'), not both, not neither"),
    ({"max_items": 3}, {}, "action.digest: give either window"),
    ({"schedule": "0 25 * * *"}, {}, "action.digest.schedule: invalid cron expression '0 25 * * *'"),
    ({"schedule": "0 9 * * *", "timezone": "Europe/Pariss"}, {},
     "action.digest.timezone: unknown time zone 'Europe/Pariss' (did you mean 'Europe/Paris'?)"),
    ({"window": "1h", "timezone": "UTC"}, {}, "action.digest: timezone applies to a schedule"),
    ({"window": "10s"}, {}, "action.digest.window: window must be between 1m and 31d"),
    ({"window": "1h", "max_items": 0}, {},
     "action.digest.max_items: Input should be greater than or equal to 1"),
    ({"window": "1h", "key": "no spaces"}, {}, "action.digest.key: 'no spaces' is not a digest key"),
    ({"window": "1h", "maxitems": 3}, {},
     "action.digest.maxitems: unknown field (did you mean 'max_items'?)"),
    ({"window": "1h"}, {"delay": "1h"}, "action.digest: a digest message goes when its digest is due; "
                                        "remove delay"),
    ({"window": "1h"}, {"escalation": [{"after": "1h", "channels": ["sms"]}]},
     "action.digest: escalation steps cannot be held in a digest"),
])
def test_bad_digests_are_named_by_file_and_field(tmp_path: Path, digest: dict[str, Any],
                                                 action: dict[str, Any], expected: str) -> None:
    lines = errors(tmp_path, digest, **action)
    assert any(line.startswith(f"{tmp_path / 'comments.yaml'}: {expected}") for line in lines), lines


def test_a_template_using_digest_needs_a_digest_program(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "comments_digest.yaml").write_text(yaml.safe_dump(
        {"default": {"title": "{{ digest.count }} new", "body": "{{ payload.author }}"}}))
    program = comments_program({"window": "1h"}, ["webhook"])
    path = tmp_path / "comments.yaml"
    path.write_text(yaml.safe_dump(program))
    assert validate_program_templates(load_program(path), tmp_path, {}) == []
    del program["action"]["digest"]
    path.write_text(yaml.safe_dump(program))
    [(field, problem)] = validate_program_templates(load_program(path), tmp_path, {})
    assert field == "action.template"
    assert problem.endswith("default.title: 'digest' is set for programs with action.digest only "
                            "(test it with `digest is defined`; docs/digests.md)")
