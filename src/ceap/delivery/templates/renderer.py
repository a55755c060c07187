"""Rendering a candidate's template for one channel (the ``Renderer`` protocol)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.exceptions import SecurityError, UndefinedError

from ceap.delivery.delivery_config import DeliveryConfig, TemplatesConfig
from ceap.delivery.model import Profile
from ceap.delivery.policies.common import Zones, is_exempt, topic_of
from ceap.delivery.render import PlainRenderer, Rendered
from ceap.delivery.templates.context import CANDIDATE_FIELDS
from ceap.delivery.templates.files import (
    NAME_RE,
    Part,
    TemplateFile,
    locale_chain,
    parse_template_file,
    part_kind,
    where,
)
from ceap.delivery.templates.sandbox import MAX_VALUE, Deadline, RenderTimeout, SafeEnvironment, TemplateError
from ceap.delivery.unsubscribe import UnsubscribeError, list_unsubscribe_headers, make_link
from ceap.errors import SpecError
from ceap.model import Candidate, utcnow
from ceap.outcomes.config import TrackingConfig
from ceap.outcomes.links import Tracker
from ceap.spec.digest import DigestView


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
    an unsubscribe URL and signing key it is refused (``require_unsubscribe``).
    With a ``tracker`` (``ceap.outcomes.links``), links become signed click links
    and HTML e-mail gets an open pixel, before the size limits are checked."""

    def __init__(self, templates_dir: str | Path, config: DeliveryConfig | TemplatesConfig | None = None,
                 *, secret: str | bytes | None = None, clock: Callable[[], datetime] = utcnow,
                 fallback: Any = None, preview: bool = False, tracker: Tracker | None = None):
        delivery = config if isinstance(config, DeliveryConfig) else DeliveryConfig()
        self.config: TemplatesConfig = config if isinstance(config, TemplatesConfig) else delivery.templates
        self.delivery = delivery
        self.dir = Path(templates_dir)
        self.secret = secret
        self.clock = clock
        self.fallback = fallback or PlainRenderer()
        self.preview = preview
        self.tracker = tracker
        self.zones = Zones(delivery.default_timezone)
        self.text_env = SafeEnvironment(autoescape=False)
        self.html_env = SafeEnvironment(autoescape=True)
        self._files: dict[str, tuple[int, TemplateFile]] = {}
        self._compiled: dict[tuple[str, str | None, str, str], Any] = {}

    @classmethod
    def from_config(cls, config: DeliveryConfig | dict[str, Any] | None, project_dir: str | Path, *,
                    tracking: TrackingConfig | None = None, store: Any = None, **kw: Any
                    ) -> TemplateRenderer:
        """The project's renderer; with ``tracking`` (``ceap.yaml``'s), tracked links are
        recorded in ``store`` (a preview passes no store: nothing is recorded)."""
        cfg = DeliveryConfig.coerce(config)
        folder = Path(cfg.templates.dir)
        if tracking is not None:
            skip = (cfg.templates.unsubscribe_url,) if cfg.templates.unsubscribe_url else ()
            kw["tracker"] = Tracker(tracking, store, secret=kw.get("secret"), skip=skip,
                                    clock=kw.get("clock", utcnow), preview=kw.get("preview", False))
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
                raise TemplateError(f"{tf.path}: {where(part, field)}: line {exc.lineno}: "
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
                             now=self.clock(), candidate_id=c.id or None)
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
            # a digest message's list (docs/digests.md); undefined for any other message
            **({"digest": DigestView.of(c.payload["digest"])} if "digest" in (c.payload or {}) else {}),
            "now": self.clock().astimezone(self.zones.of(profile)),
            "locale": locale,
            "channel": channel,
        }
        if unsubscribe_url is not None:
            ctx["unsubscribe_url"] = unsubscribe_url
        if self.config.preferences_url:  # a signed link to the customer's preference page
            from ceap.delivery.preferences import make_preferences_link

            try:
                ctx["preferences_url"] = make_preferences_link(
                    self.config.preferences_url, c.tenant_id, c.customer_id, secret=self.secret,
                    now=self.clock())
            except UnsubscribeError:  # no signing key: a template using it fails to render, named
                if self.preview:
                    ctx["preferences_url"] = f"{self.config.preferences_url}?token=PREVIEW"
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
        if self.tracker is not None:
            rendered = self.tracker.apply(rendered, candidate, channel, kind)
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
            return Deadline(self.config.render_timeout).run(run)
        except RenderTimeout as exc:
            raise TemplateError(f"{tf.path}: {where(part, field)}: {exc}") from None
        except UndefinedError as exc:
            raise TemplateError(f"{tf.path}: {where(part, field)}: {exc.message}") from None
        except SecurityError as exc:
            raise TemplateError(f"{tf.path}: {where(part, field)}: refused: {exc}") from None
        except Exception as exc:  # a template's own bug: reported with its place, not a traceback
            raise TemplateError(f"{tf.path}: {where(part, field)}: {type(exc).__name__}: {exc}") from None

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

