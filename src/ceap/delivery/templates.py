"""Message templates: Jinja2 in the immutable sandbox, one YAML file per template.

``templates/win_back_offer.yaml``::

    description: the win-back offer
    email:
      subject: "{{ payload.discount_pct }}% off for {{ payload.duration_months }} months"
      text: |
        Hello {{ profile.attributes.first_name | default('there') }}, ...
        Unsubscribe: {{ unsubscribe_url }}
      html: "<p>Hello ...</p>"
    sms:
      text: "Come back: {{ payload.offer_code }}. Reply STOP to opt out."
    push: {title: "...", body: "..."}
    inapp: {title: "...", body: "..."}
    default: {title: "...", body: "..."}     # any other channel (slack, webhook...)
    locales:
      fr:
        email: {subject: "...", text: "...", html: "..."}

Context: ``candidate`` (its fields), ``profile`` (customer_id, email, phone,
push_token, timezone, locale and ``attributes``), ``payload``,
``unsubscribe_url``, ``now`` (in the customer's time zone), ``locale``,
``channel``. A missing variable is an error (``StrictUndefined``), caught by
``validate_program_templates`` before anything is sent; HTML parts are
autoescaped; each rendered part has a size limit and a time limit.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2 import filters as jfilters
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.meta import find_undeclared_variables
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_eval_context

from ceap.delivery.delivery_config import DeliveryConfig, TemplatesConfig
from ceap.delivery.model import Profile
from ceap.delivery.policies.common import Zones, is_exempt, topic_of
from ceap.delivery.render import PlainRenderer, Rendered
from ceap.delivery.unsubscribe import UnsubscribeError, list_unsubscribe_headers, make_link
from ceap.errors import CeapError, SpecError
from ceap.model import Candidate, utcnow
from ceap.spec.yaml_io import read_yaml_mapping

#: largest string or list any one step of a render may build (characters or items)
MAX_VALUE = 1_000_000
#: largest width or precision a format specification may ask for
MAX_WIDTH = 10_000
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
CONTEXT_NAMES = frozenset({"candidate", "profile", "payload", "unsubscribe_url", "now", "locale",
                           "channel"})
CANDIDATE_FIELDS = frozenset({"id", "tenant_id", "program", "run_id", "customer_id", "subject_id",
                              "context", "action_type", "channels", "template", "category", "score",
                              "model", "reasons", "payload", "status", "priority", "created_at",
                              "not_before", "expires_at", "dedup_key", "variant"})
PROFILE_FIELDS = frozenset({"customer_id", "email", "phone", "push_token", "timezone", "locale",
                            "attributes"})
_DICT_METHODS = frozenset(n for n in dir(dict) if not n.startswith("_"))


class TemplateError(CeapError):
    """A template cannot be loaded or rendered; the message names the file and part."""


class RenderTimeout(TemplateError):
    pass


# -- the sandbox -----------------------------------------------------------------


def _too_big(n: int) -> None:
    if n > MAX_VALUE:
        raise SecurityError(f"a value of {n} characters or items is over the render limit ({MAX_VALUE})")


def _checked(value: Any) -> Any:
    if isinstance(value, str | list | tuple | bytes | dict):
        _too_big(len(value))
    return value


_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_BRACE = re.compile(r"\{[^{}]*?:([^{}]*)\}")


def _check_format(fmt: str, printf: bool) -> None:
    if printf:
        for match in _PRINTF.finditer(fmt):
            for group in match.groups():
                if group == "*" or (group and int(group) > MAX_WIDTH):
                    raise SecurityError("format width or precision over the render limit")
    else:
        if re.search(r"\{[^{}]*:[^{}]*\{", fmt):
            raise SecurityError("nested format specifications are not allowed in templates")
        for match in _BRACE.finditer(fmt):
            if any(int(n) > MAX_WIDTH for n in re.findall(r"\d+", match.group(1))):
                raise SecurityError("format width or precision over the render limit")


def _f_center(value: Any, width: int = 80) -> str:
    _too_big(int(width))
    return jfilters.do_center(value, width)


def _f_indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    size = width if isinstance(width, int) else len(str(width))
    _too_big(len(str(s)) + (str(s).count("\n") + 1) * int(size))
    return jfilters.do_indent(s, width, first, blank)


@pass_eval_context
def _f_join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    items = list(value)
    _too_big(len(items))
    _too_big(len(d) * len(items) + sum(len(str(x)) for x in items))
    return jfilters.sync_do_join(eval_ctx, items, d, attribute)


@pass_eval_context
def _f_replace(eval_ctx: Any, s: str, old: str, new: str, count: int | None = None) -> str:
    text = str(s)
    hits = (len(text) + 1) if old == "" else text.count(str(old))
    if count is not None and count >= 0:
        hits = min(hits, count)
    _too_big(len(text) + hits * max(len(str(new)) - len(str(old)), 0))
    return jfilters.do_replace(eval_ctx, s, old, new, count)


def _f_format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_format(str(value), printf=True)
    return _checked(jfilters.do_format(value, *args, **kwargs))


def _f_wordwrap(environment: Any, s: str, width: int = 79, break_long_words: bool = True,
                wrapstring: str | None = None, break_on_hyphens: bool = True) -> str:
    breaks = len(str(s)) // max(int(width), 1) + 1
    _too_big(len(str(s)) + breaks * len(wrapstring or "\n"))
    return jfilters.do_wordwrap(environment, s, width, break_long_words, wrapstring, break_on_hyphens)


_f_wordwrap.jinja_pass_arg = jfilters.do_wordwrap.jinja_pass_arg  # type: ignore[attr-defined]


def _f_batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Any:
    _too_big(int(linecount))
    return jfilters.do_batch(value, linecount, fill_with)


def _f_slice(value: Any, slices: int, fill_with: Any = None) -> Any:
    _too_big(int(slices))
    return jfilters.sync_do_slice(value, slices, fill_with)


_STR_WIDTH = {"center", "ljust", "rjust", "zfill"}


class _Codegen(CodeGenerator):
    """Wraps every ``~`` concatenation in a size check."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked(")
        super().visit_Concat(node, frame)
        self.write(")")


class SafeEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus limits on the size of what a template builds."""

    code_generator_class = _Codegen
    intercepted_binops = frozenset({"*", "**", "+"})

    def __init__(self, autoescape: bool):
        super().__init__(undefined=StrictUndefined, autoescape=autoescape, trim_blocks=True,
                         lstrip_blocks=True)
        for name in ("lipsum", "cycler", "joiner"):
            self.globals.pop(name, None)
        self.filters.update(center=_f_center, indent=_f_indent, join=_f_join, replace=_f_replace,
                            format=_f_format, wordwrap=_f_wordwrap, batch=_f_batch, slice=_f_slice)

    @staticmethod
    def checked(value: Any) -> Any:
        return _checked(value)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int) and right > 64 and not (isinstance(left, int | float)
                                                               and abs(left) <= 1):
                raise SecurityError("exponent over the render limit")
        elif operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    _too_big(len(seq) * n)
        elif operator == "+" and isinstance(left, str | list | tuple) and \
                isinstance(right, str | list | tuple):
            _too_big(len(left) + len(right))
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            if name in _STR_WIDTH and args and isinstance(args[0], int):
                _too_big(args[0])
            elif name == "replace" and len(args) >= 2:
                old, new = str(args[0]), str(args[1])
                hits = (len(owner) + 1) if old == "" else owner.count(old)
                _too_big(len(owner) + hits * max(len(new) - len(old), 0))
            elif name == "expandtabs":
                tab = int(args[0]) if args else 8
                _too_big(len(owner) * max(tab, 1))
            elif name == "join" and args:
                items = list(args[0])
                _too_big(len(owner) * len(items) + sum(len(str(x)) for x in items))
                args = (items, *args[1:])
        return _checked(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        fn = super().wrap_str_format(value)
        if fn is None:
            return None
        fmt = str(value.__self__)

        def checked_format(*args: Any, **kwargs: Any) -> str:
            _check_format(fmt, printf=False)
            return _checked(fn(*args, **kwargs))

        return checked_format


class _Deadline:
    """Line-level tracing of the template's own code, so a runaway loop stops
    after ``seconds``. Skipped when another tracer (a debugger, coverage) is active."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = 0.0
        self.n = 0

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        self.n += 1
        if self.n & 0xFF == 0 and time.monotonic() > self.end:
            raise RenderTimeout(f"rendering took longer than {self.seconds:g} s")
        return self._local

    def _global(self, frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename.startswith("<template"):
            return self._local
        return None

    def run(self, fn: Callable[[], str]) -> str:
        if sys.gettrace() is not None:
            return fn()
        self.end, self.n = time.monotonic() + self.seconds, 0
        sys.settrace(self._global)
        try:
            return fn()
        finally:
            sys.settrace(None)


# -- template files ----------------------------------------------------------------


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


# -- rendering -----------------------------------------------------------------------


def candidate_context(c: Candidate) -> dict[str, Any]:
    return {f.name: getattr(c, f.name) for f in fields(c) if f.name in CANDIDATE_FIELDS}


def profile_context(profile: Profile | None, customer_id: str) -> dict[str, Any]:
    if profile is None:
        return {"customer_id": customer_id, "email": None, "phone": None, "push_token": None,
                "timezone": None, "locale": None, "attributes": {}}
    data = asdict(profile)
    data.pop("tenant_id", None)
    data["attributes"] = dict(profile.attributes or {})
    return data


class TemplateRenderer:
    """Renders a candidate's template for one channel (the ``Renderer`` protocol).

    Candidates without a template get the plain renderer's text. Marketing e-mail
    gets RFC 8058 ``List-Unsubscribe`` headers and an ``unsubscribe_url``; without
    an unsubscribe URL and signing key it is refused (``require_unsubscribe``)."""

    def __init__(self, templates_dir: str | Path, config: DeliveryConfig | TemplatesConfig | None = None,
                 *, secret: str | bytes | None = None, clock: Callable[[], datetime] = utcnow,
                 fallback: Any = None, preview: bool = False):
        delivery = config if isinstance(config, DeliveryConfig) else DeliveryConfig()
        self.config: TemplatesConfig = config if isinstance(config, TemplatesConfig) else delivery.templates
        self.delivery = delivery
        self.dir = Path(templates_dir)
        self.secret = secret
        self.clock = clock
        self.fallback = fallback or PlainRenderer()
        self.preview = preview
        self.zones = Zones(delivery.default_timezone)
        self.text_env = SafeEnvironment(autoescape=False)
        self.html_env = SafeEnvironment(autoescape=True)
        self._files: dict[str, tuple[int, TemplateFile]] = {}
        self._compiled: dict[tuple[str, str | None, str, str], Any] = {}

    @classmethod
    def from_config(cls, config: DeliveryConfig | dict[str, Any] | None, project_dir: str | Path,
                    **kw: Any) -> TemplateRenderer:
        cfg = DeliveryConfig.coerce(config)
        folder = Path(cfg.templates.dir)
        return cls(folder if folder.is_absolute() else Path(project_dir) / folder, cfg, **kw)

    # -- files ------------------------------------------------------------
    def path(self, name: str) -> Path:
        if not NAME_RE.match(name or ""):
            raise TemplateError(f"invalid template name {name!r}")
        for ext in (".yaml", ".yml"):
            p = self.dir / f"{name}{ext}"
            if p.exists():
                return p
        return self.dir / f"{name}.yaml"

    def load(self, name: str) -> TemplateFile:
        path = self.path(name)
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            raise TemplateError(f"template {name!r} not found: {path}") from None
        cached = self._files.get(name)
        if cached and cached[0] == stamp:
            return cached[1]
        try:
            tf = parse_template_file(path, name, self.config)
        except SpecError as exc:
            raise TemplateError(str(exc)) from None
        self._files[name] = (stamp, tf)
        self._compiled = {k: v for k, v in self._compiled.items() if k[0] != name}
        return tf

    def _compile(self, tf: TemplateFile, part: Part, field: str) -> Any:
        key = (tf.name, part.locale, part.key, field)
        tpl = self._compiled.get(key)
        if tpl is None:
            env = self.html_env if field == "html" else self.text_env
            try:
                tpl = env.from_string(part.fields[field])
            except TemplateSyntaxError as exc:
                raise TemplateError(f"{tf.path}: {_where(part, field)}: line {exc.lineno}: "
                                    f"{exc.message}") from None
            self._compiled[key] = tpl
        return tpl

    # -- render ---------------------------------------------------------------
    def unsubscribe_url(self, c: Candidate, channel: str) -> str | None:
        base = self.config.unsubscribe_url
        if not base:
            return "https://unsubscribe.invalid/preview" if self.preview else None
        topic = topic_of(c, self.delivery.consent.topic_field)
        try:
            return make_link(base, c.tenant_id, c.customer_id, channel, topic, secret=self.secret,
                             now=self.clock())
        except UnsubscribeError:
            if self.preview:
                return f"{base}?token=PREVIEW"
            raise

    def context(self, c: Candidate, channel: str, profile: Profile | None, locale: str | None,
                unsubscribe_url: str | None = None) -> dict[str, Any]:
        ctx: dict[str, Any] = {
            "candidate": candidate_context(c),
            "profile": profile_context(profile, c.customer_id),
            "payload": dict(c.payload or {}),
            "now": self.clock().astimezone(self.zones.of(profile)),
            "locale": locale,
            "channel": channel,
        }
        if unsubscribe_url is not None:
            ctx["unsubscribe_url"] = unsubscribe_url
        return ctx

    def render(self, candidate: Candidate, channel: str, profile: Profile | None) -> Rendered:
        kind = part_kind(channel, self.config.channel_kinds)
        marketing_email = kind == "email" and not is_exempt(candidate.category, self.delivery)
        try:
            url = self.unsubscribe_url(candidate, channel)
            problem = "set delivery.templates.unsubscribe_url in ceap.yaml" if url is None else ""
        except UnsubscribeError as exc:
            url, problem = None, str(exc)
        if marketing_email and url is None and self.config.require_unsubscribe:
            raise TemplateError(f"marketing e-mail needs a one-click unsubscribe link: {problem}")
        if candidate.template is None:
            rendered = self.fallback.render(candidate, channel, profile)
            if marketing_email and url:
                rendered = Rendered(rendered.title, f"{rendered.body}\n\nUnsubscribe: {url}",
                                    rendered.html, rendered.headers)
        else:
            tf = self.load(candidate.template)
            locales = locale_chain(profile.locale if profile else None)
            part = tf.part([channel, kind, "default"] if kind != channel else [channel, "default"], locales)
            if part is None:
                raise TemplateError(f"{tf.path}: no part for channel {channel!r} (add '{channel}:' or "
                                    f"'default:')")
            ctx = self.context(candidate, channel, profile, part.locale or tf.default_locale, url)
            out = {name: self._render_field(tf, part, name, ctx) for name in part.fields}
            rendered = self._assemble(tf, part, out)
        if marketing_email and url:
            rendered = Rendered(rendered.title, rendered.body, rendered.html,
                                {**rendered.headers, **list_unsubscribe_headers(url)})
        self._check_limits(candidate, channel, kind, rendered)
        return rendered

    def _render_field(self, tf: TemplateFile, part: Part, field: str, ctx: dict[str, Any]) -> str:
        tpl = self._compile(tf, part, field)
        budget = MAX_VALUE

        def run() -> str:
            chunks, size = [], 0
            for chunk in tpl.generate(ctx):
                size += len(chunk)
                if size > budget:
                    raise SecurityError(f"output over {budget} characters")
                chunks.append(chunk)
            return "".join(chunks)

        try:
            return _Deadline(self.config.render_timeout).run(run)
        except RenderTimeout as exc:
            raise TemplateError(f"{tf.path}: {_where(part, field)}: {exc}") from None
        except UndefinedError as exc:
            raise TemplateError(f"{tf.path}: {_where(part, field)}: {exc.message}") from None
        except SecurityError as exc:
            raise TemplateError(f"{tf.path}: {_where(part, field)}: refused: {exc}") from None
        except Exception as exc:  # a template's own bug: reported with its place, not a traceback
            raise TemplateError(f"{tf.path}: {_where(part, field)}: {type(exc).__name__}: {exc}") from None

    @staticmethod
    def _assemble(tf: TemplateFile, part: Part, out: dict[str, str]) -> Rendered:
        # titles (an e-mail subject is a header) are one line: no header injection from the payload
        if part.kind == "email":
            return Rendered(title=_one_line(out["subject"]), body=out["text"].rstrip(), html=out.get("html"))
        if part.kind in ("sms", "voice"):
            return Rendered(title="", body=out["text"].strip())
        return Rendered(title=_one_line(out.get("title", "")), body=out.get("body", "").rstrip())

    def _check_limits(self, c: Candidate, channel: str, kind: str, r: Rendered) -> None:
        limits = self.config.limits_for(kind)
        where = f"template {c.template!r}, channel {channel}" if c.template else f"channel {channel}"
        if limits.title is not None and len(r.title) > limits.title:
            raise TemplateError(f"{where}: title is {len(r.title)} characters, over the {limits.title} limit")
        if limits.body is not None and len(r.body) > limits.body:
            raise TemplateError(f"{where}: body is {len(r.body)} characters, over the {limits.body} limit")
        if limits.total is not None:
            total = sum(len(s.encode()) for s in (r.title, r.body, r.html or ""))
            if total > limits.total:
                raise TemplateError(f"{where}: message is {total} bytes, over the {limits.total} limit")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _where(part: Part, field: str) -> str:
    return f"{'locales.' + part.locale + '.' if part.locale else ''}{part.key}.{field}"


# -- validation ----------------------------------------------------------------------


@dataclass(frozen=True)
class Known:
    """What a program's candidates carry, for checking templates statically."""

    payload: frozenset[str]
    category: str = "marketing"


def _attr_chain(node: nodes.Node) -> tuple[str, list[tuple[Any, bool]]] | None:
    """``payload.a['b']`` -> ("payload", [("a", True), ("b", False)]) for constant lookups
    (True: attribute syntax)."""
    keys: list[tuple[Any, bool]] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            keys.append((node.attr, True))
        elif isinstance(node.arg, nodes.Const):
            keys.append((node.arg.value, False))
        else:
            keys = []  # a computed key: only what comes before it is known
        node = node.node
    if isinstance(node, nodes.Name) and node.ctx == "load":
        return node.name, list(reversed(keys))
    return None


def _guarded(ast: nodes.Template) -> tuple[set[int], set[tuple[str, Any]]]:
    """Lookups the template guards itself: ``x | default(...)`` (that lookup), and
    keys tested with ``is defined`` (everywhere in the field)."""
    ids: set[int] = set()
    keys: set[tuple[str, Any]] = set()
    for f in ast.find_all(nodes.Filter):
        if f.name in ("default", "d") and f.node is not None:
            ids.add(id(f.node))
    for t in ast.find_all(nodes.Test):
        if t.name in ("defined", "undefined"):
            ids.add(id(t.node))
            chain = _attr_chain(t.node)
            if chain and len(chain[1]) == 1:
                keys.add((chain[0], chain[1][0][0]))
    return ids, keys


def check_source(source: str, known: Known, html: bool = False) -> list[str]:
    """Problems with one template field: syntax, unknown variables, unknown
    payload keys, profile or candidate fields."""
    env = SafeEnvironment(autoescape=html)
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as exc:
        return [f"line {exc.lineno}: {exc.message}"]
    problems: list[str] = []
    undeclared = find_undeclared_variables(ast)
    for name in sorted(undeclared - CONTEXT_NAMES - set(env.globals)):
        problems.append(f"unknown variable {name!r} (known: {', '.join(sorted(CONTEXT_NAMES))})")
    guarded, optional = _guarded(ast)
    seen: set[str] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        chain = _attr_chain(node)
        if chain is None or chain[0] not in undeclared or not chain[1] or id(node) in guarded:
            continue
        root, keys = chain
        first, as_attr = keys[0]
        if not isinstance(first, str) or (root, first) in optional:
            continue
        if len(keys) == 1 and root == "payload" and as_attr and first in _DICT_METHODS \
                and first not in known.payload:
            continue  # payload.items(), payload.get('x')...
        message = None
        if root == "payload":
            if first not in known.payload:
                message = (f"payload has no key {first!r} (the program's payload has: "
                           f"{', '.join(sorted(known.payload)) or 'nothing'})")
            elif as_attr and first in _DICT_METHODS:
                message = f"write payload[{first!r}]: payload.{first} is the mapping's method"
        elif root == "profile" and first not in PROFILE_FIELDS:
            message = (f"profile has no field {first!r} (fields: {', '.join(sorted(PROFILE_FIELDS))}; "
                       f"custom ones are under profile.attributes)")
        elif root == "candidate" and first not in CANDIDATE_FIELDS:
            message = f"candidate has no field {first!r}"
        if message and message not in seen:
            seen.add(message)
            problems.append(message)
    return problems


def program_payload_keys(spec: Any) -> frozenset[str]:
    action = spec.action
    keys = set(action.payload) | set(action.payload_columns)
    if getattr(action, "items", 0):
        keys.add("items")
    return frozenset(keys)


def validate_template_file(tf: TemplateFile, known: Known, channels: Iterable[str],
                           channel_kinds: dict[str, str] | None = None,
                           exempt: Iterable[str] = ("transactional", "security")) -> list[str]:
    """Every problem with ``tf`` for a program sending on ``channels``."""
    problems: list[str] = []
    for ch in channels:
        kind = part_kind(ch, channel_kinds)
        if tf.part([ch, kind, "default"], [None]) is None:
            problems.append(f"no part for channel {ch!r} (add '{ch}:' or 'default:')")
    marketing = known.category not in set(exempt)
    for part in tf.all_parts():
        for name, source in part.fields.items():
            for issue in check_source(source, known, html=name == "html"):
                problems.append(f"{_where(part, name)}: {issue}")
        if marketing and part.kind == "email" and not any(
                "unsubscribe_url" in part.fields.get(f, "") for f in ("text", "html")):
            problems.append(f"{_where(part, 'text')}: marketing e-mail must show the unsubscribe link "
                            "({{ unsubscribe_url }}) in its text or html")
    return problems


def validate_template(templates_dir: str | Path, name: str, known: Known, channels: Iterable[str],
                      config: TemplatesConfig | None = None,
                      exempt: Iterable[str] = ("transactional", "security")) -> list[str]:
    """Problems with template ``name`` (each names the file), empty when it is fine."""
    config = config or TemplatesConfig()
    if not NAME_RE.match(name or ""):
        return [f"invalid template name {name!r}"]
    base = Path(templates_dir)
    path = next((p for p in (base / f"{name}.yaml", base / f"{name}.yml") if p.exists()),
                base / f"{name}.yaml")
    if not path.exists():
        return [f"template {name!r} not found: {path}"]
    try:
        tf = parse_template_file(path, name, config)
    except SpecError as exc:
        return exc.lines()
    return [f"{path}: {p}" for p in validate_template_file(tf, known, channels, config.channel_kinds,
                                                             exempt)]


def validate_program_templates(program_spec: Any, project_dir: str | Path,
                               config: DeliveryConfig | dict[str, Any] | None = None
                               ) -> list[tuple[str, str]]:
    """``(field, message)`` for every template problem of one program, for
    ``ceap validate``: a missing file or channel part, a syntax error, a variable
    the program's payload (``action.payload`` keys and ``payload_columns``) or the
    profile does not have; each message names the template file."""
    cfg = _delivery_config(config, project_dir)
    action = program_spec.action
    if not action.template:
        return []
    folder = Path(cfg.templates.dir)
    folder = folder if folder.is_absolute() else Path(project_dir) / folder
    known = Known(program_payload_keys(program_spec), action.category)
    return [("action.template", p) for p in
            validate_template(folder, action.template, known, action.channels, cfg.templates,
                              cfg.exempt_categories)]


def _delivery_config(config: DeliveryConfig | dict[str, Any] | None, project_dir: str | Path
                     ) -> DeliveryConfig:
    if config is not None:
        return DeliveryConfig.coerce(config)
    from ceap.spec.project import load_project

    project = load_project(project_dir)
    return DeliveryConfig.coerce(getattr(project, "delivery", None))


# -- preview -------------------------------------------------------------------------


def preview(project_dir: str | Path, program_name: str, customer_id: str, store: Any,
            config: DeliveryConfig | dict[str, Any] | None = None,
            tenant: str | None = None) -> dict[str, Rendered]:
    """What ``customer_id`` would get from ``program_name``, per channel.

    Uses the customer's latest candidate of the program when the store has one,
    else a candidate built from the program's action (payload columns it cannot
    know show as ``<column>``). Unsubscribe links are real when the URL and
    signing key are configured, placeholders otherwise."""
    from ceap.delivery.profiles import load_profiles
    from ceap.model import CandidateQuery
    from ceap.spec import load_program, load_project

    project = load_project(project_dir)
    cfg = DeliveryConfig.coerce(config if config is not None else getattr(project, "delivery", None))
    tenant = tenant or project.tenant
    folder = project.programs_dir()
    path = next((p for p in (folder / f"{program_name}.yaml", folder / f"{program_name}.yml")
                 if p.exists()), None)
    if path is None:
        raise TemplateError(f"program {program_name!r} not found in {folder}")
    spec = load_program(path)
    found = store.candidates(CandidateQuery(tenant_id=tenant, customer_id=customer_id,
                                            program=spec.name, include_expired=True, limit=1000))
    candidate = (max(found, key=lambda c: (c.created_at, c.id)) if found
                 else _sample(spec, tenant, customer_id))
    profile = load_profiles(store, [(tenant, customer_id)]).get((tenant, customer_id))
    renderer = TemplateRenderer.from_config(cfg, project.base_dir, preview=True)
    return {ch: renderer.render(candidate, ch, profile) for ch in candidate.channels}


def _sample(spec: Any, tenant: str, customer_id: str) -> Candidate:
    action = spec.action
    now = utcnow()
    payload = {**{col: f"<{col}>" for col in action.payload_columns}, **action.payload}
    if action.items:
        payload["items"] = []
    return Candidate(id=0, tenant_id=tenant, program=spec.name, run_id="preview", customer_id=customer_id,
                     subject_id=None, context={}, action_type=action.type, channels=list(action.channels),
                     template=action.template, category=action.category, score=0.0, model="preview",
                     reasons=None, payload=payload, status="preview", priority=spec.priority,
                     created_at=now, not_before=now, expires_at=now + action.expiry,
                     dedup_key="preview", holdout=False, version=0)


__all__ = ["KINDS", "MAX_VALUE", "Known", "RenderTimeout", "SafeEnvironment", "TemplateError",
           "TemplateFile", "TemplateRenderer", "check_source", "locale_chain", "parse_template_file",
           "preview", "program_payload_keys", "validate_program_templates", "validate_template",
           "validate_template_file"]
