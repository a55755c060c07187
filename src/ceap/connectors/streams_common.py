"""What the stream connectors share: the consumer's default name, secrets read
from environment variables named in the config, the optional libraries, and
the event id and customer id a message body carries (for broker-side
deduplication and partitioning)."""

from __future__ import annotations

import importlib
import os
import socket
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator

from ceap.errors import PluginError
from ceap.json_input import loads as json_loads
from ceap.plugin import PluginContext


def consumer_name(configured: str | None) -> str:
    """This worker's name in its group: the configured one, or host:pid."""
    return configured or f"{socket.gethostname()}:{os.getpid()}"


def env_value(kind: str, env: str, what: str, context: PluginContext | None = None) -> str:
    """The value of environment variable ``env`` (or the project connection of that name)."""
    value = os.environ.get(env) or (context.connections.get(env) if context else None)
    if not value:
        raise PluginError(f"{kind} connector: {what} missing: set the environment variable {env}")
    return value


def no_password(url: str) -> str:
    """A config validator: a URL written in the config holds no password."""
    try:
        has_password = bool(urlsplit(url).password)
    except ValueError:
        has_password = False
    if has_password:
        raise ValueError("the URL holds a password: put the URL in an environment variable "
                         "and name that variable in url_env")
    return url


#: a URL field of a config: it may not hold a password
Url = Annotated[str, AfterValidator(no_password)]


def need(module: str, kind: str, extra: str, package: str) -> Any:
    """Import an optional library, or fail saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise PluginError(f"the {kind} connector needs {package}: pip install 'ceap[{extra}]'") from None


def body_keys(body: bytes) -> tuple[str | None, str | None]:
    """``(event id, customer id)`` of a message body holding one event; for a JSON list,
    the customer id all its events share (and no event id). ``(None, None)`` otherwise."""
    try:
        data = json_loads(body)
    except ValueError:   # not JSON, not UTF-8, or nested too deep: no keys
        return None, None
    if isinstance(data, dict):
        event_id, customer = data.get("id"), data.get("customer_id")
        if "detail-type" in data and isinstance(data.get("detail"), dict):  # EventBridge envelope
            customer = data["detail"].get("customer_id")
        return (str(event_id) if event_id is not None else None,
                str(customer) if customer is not None else None)
    if isinstance(data, list) and data and all(isinstance(e, dict) for e in data):
        customers = {e.get("customer_id") for e in data}
        if len(customers) == 1 and None not in customers:
            return None, str(customers.pop())
    return None, None
