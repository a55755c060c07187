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

The package is split by concern: ``sandbox`` (the environment and its
limits), ``files`` (parsing template files), ``renderer`` (rendering, with
unsubscribe links and, when configured, open and click tracking), ``checks``
(static validation; its Jinja2 side is ``source_checks``, imported only for a field not
seen passing before) and ``previews``; each is imported when one of its names is first
asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ceap.delivery.templates.checks import (
        Known,
        check_source,
        program_payload_keys,
        validate_program_templates,
        validate_template,
        validate_template_file,
    )
    from ceap.delivery.templates.files import KINDS, TemplateFile, locale_chain, parse_template_file
    from ceap.delivery.templates.previews import preview
    from ceap.delivery.templates.renderer import TemplateRenderer
    from ceap.delivery.templates.sandbox import MAX_VALUE, RenderTimeout, SafeEnvironment, TemplateError

#: name -> the submodule defining it; imported when first asked for, so that checking
#: templates (``ceap validate``) does not import the renderer and the delivery policies
_WHERE = {
    **dict.fromkeys(["Known", "check_source", "program_payload_keys", "validate_program_templates",
                     "validate_template", "validate_template_file"], "checks"),
    **dict.fromkeys(["KINDS", "TemplateFile", "locale_chain", "parse_template_file"], "files"),
    "preview": "previews",
    "TemplateRenderer": "renderer",
    **dict.fromkeys(["MAX_VALUE", "RenderTimeout", "SafeEnvironment", "TemplateError"], "sandbox"),
}

__all__ = ["KINDS", "MAX_VALUE", "Known", "RenderTimeout", "SafeEnvironment", "TemplateError",
           "TemplateFile", "TemplateRenderer", "check_source", "locale_chain", "parse_template_file",
           "preview", "program_payload_keys", "validate_program_templates", "validate_template",
           "validate_template_file"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
