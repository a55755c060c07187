"""Template files: one YAML file per template, parts per channel and locale."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ceap.delivery.delivery_config import TemplatesConfig
from ceap.errors import SpecError
from ceap.spec.yaml_io import read_yaml_mapping

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")

#: part kind -> field -> required
KINDS: dict[str, dict[str, bool]] = {
    "email": {"subject": True, "text": True, "html": False},
    "sms": {"text": True},
    "voice": {"text": True},
    "push": {"title": True, "body": True},
    "inapp": {"title": True, "body": True},
}
GENERIC: dict[str, bool] = {"title": False, "body": True}
RESERVED = {"description", "locales", "default_locale"}


@dataclass(frozen=True)
class Part:
    """One channel's fields in one locale."""

    key: str
    kind: str
    locale: str | None
    fields: dict[str, str]


@dataclass
class TemplateFile:
    name: str
    path: Path
    description: str | None
    default_locale: str | None
    parts: dict[str | None, dict[str, Part]]   # locale (None: top level) -> part key -> part

    def part(self, keys: Iterable[str], locales: Iterable[str | None]) -> Part | None:
        keys = list(keys)
        for loc in locales:
            table = self.parts.get(loc)
            if table is None:
                continue
            for key in keys:
                if key in table:
                    return table[key]
        return None

    def all_parts(self) -> Iterator[Part]:
        for table in self.parts.values():
            yield from table.values()


def part_kind(key: str, channel_kinds: dict[str, str] | None = None) -> str:
    kind = (channel_kinds or {}).get(key, key)
    return kind if kind in KINDS else "default"


def _parse_parts(data: dict[str, Any], locale: str | None, where: str, kinds: dict[str, str],
                 issues: list[tuple[str, str]]) -> dict[str, Part]:
    parts: dict[str, Part] = {}
    for key, value in data.items():
        loc = f"{where}{key}"
        if not isinstance(key, str) or not NAME_RE.match(key):
            issues.append((loc, "a channel name (letters, digits, _ and -)"))
            continue
        if not isinstance(value, dict):
            issues.append((loc, f"expected a mapping of fields, got {type(value).__name__}"))
            continue
        kind = part_kind(key, kinds)
        schema = KINDS.get(kind, GENERIC)
        for name, v in value.items():
            if name not in schema:
                issues.append((f"{loc}.{name}", f"unknown field for a {kind} part "
                                                f"(expected: {', '.join(schema)})"))
            elif not isinstance(v, str):
                issues.append((f"{loc}.{name}", f"expected text, got {type(v).__name__}"))
        for name, required in schema.items():
            if required and name not in value:
                issues.append((f"{loc}.{name}", "required field is missing"))
        parts[key] = Part(key, kind, locale, {k: v for k, v in value.items() if isinstance(v, str)})
    return parts


def parse_template_file(path: Path, name: str, config: TemplatesConfig | None = None) -> TemplateFile:
    """Read and check one template file; ``SpecError`` lists every problem."""
    config = config or TemplatesConfig()
    try:
        size = path.stat().st_size
    except OSError:
        raise SpecError(str(path), [("", "template file not found")]) from None
    if size > config.max_template_bytes:
        raise SpecError(str(path), [("", f"template file is {size} bytes, over the "
                                         f"{config.max_template_bytes} byte limit")])
    data = read_yaml_mapping(path)
    issues: list[tuple[str, str]] = []
    description = data.get("description")
    default_locale = data.get("default_locale")
    if description is not None and not isinstance(description, str):
        issues.append(("description", "expected text"))
    if default_locale is not None and not (isinstance(default_locale, str)
                                           and LOCALE_RE.match(default_locale)):
        issues.append(("default_locale", "expected a locale such as 'en' or 'fr-CA'"))
    top = {k: v for k, v in data.items() if k not in RESERVED}
    parts: dict[str | None, dict[str, Part]] = {None: _parse_parts(top, None, "", config.channel_kinds,
                                                                   issues)}
    locales = data.get("locales") or {}
    if not isinstance(locales, dict):
        issues.append(("locales", "expected a mapping of locale -> channel parts"))
        locales = {}
    for loc, table in locales.items():
        if not isinstance(loc, str) or not LOCALE_RE.match(loc):
            issues.append((f"locales.{loc}", "expected a locale such as 'fr' or 'fr-CA'"))
            continue
        if not isinstance(table, dict):
            issues.append((f"locales.{loc}", "expected a mapping of channel parts"))
            continue
        parts[_norm_locale(loc)] = _parse_parts(table, _norm_locale(loc), f"locales.{loc}.",
                                                config.channel_kinds, issues)
    if not parts[None] and len(parts) == 1:
        issues.append(("", "the template has no channel parts (email, sms, push, inapp, default...)"))
    if issues:
        raise SpecError(str(path), issues)
    return TemplateFile(name, path, description, default_locale, parts)


def _norm_locale(value: str) -> str:
    return value.replace("_", "-").lower()


def locale_chain(locale: str | None) -> list[str | None]:
    """``fr-CA`` -> ``fr-ca``, ``fr``, then the file's top-level parts (None)."""
    chain: list[str | None] = []
    if locale:
        pieces = _norm_locale(locale).split("-")
        for n in range(len(pieces), 0, -1):
            chain.append("-".join(pieces[:n]))
    chain.append(None)
    return chain


def where(part: Part, field: str) -> str:
    return f"{'locales.' + part.locale + '.' if part.locale else ''}{part.key}.{field}"
