"""Object storage for the file sources: ``s3://``, ``gs://``, ``az://`` through fsspec.

DuckDB reads the objects through the fsspec file system registered on its
connection, so CSV, JSON Lines and Parquet behave as on local disk (globs,
``union_by_name``, Hive-style partitions, filters pushed into the scan).
Credentials come from the environment or the cloud's default chain (for S3:
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, instance
roles; ``AWS_ENDPOINT_URL`` for an S3-compatible service), never from the
program file: ``storage_options`` refuses anything that looks like a secret.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ceap.errors import SourceError

#: URL scheme -> (fsspec protocol, the package that provides it, the ceap extra)
SCHEMES: dict[str, tuple[str, str, str]] = {
    "s3": ("s3", "s3fs", "s3"),
    "s3a": ("s3", "s3fs", "s3"),
    "gs": ("gs", "gcsfs", "gcs"),
    "gcs": ("gs", "gcsfs", "gcs"),
    "az": ("az", "adlfs", "azure"),
    "abfs": ("abfs", "adlfs", "azure"),
    "abfss": ("abfs", "adlfs", "azure"),
}
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_SECRET_WORDS = ("secret", "password", "token", "credential", "key", "sas", "signature")
#: environment variables whose values must never reach a message
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY",
              "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_SECRET", "AZURE_STORAGE_CONNECTION_STRING",
              "SNOWFLAKE_PASSWORD", "GOOGLE_APPLICATION_CREDENTIALS_JSON")


def scheme_of(path: str) -> str | None:
    """The URL scheme of ``path`` (``s3``), or None for a local path."""
    match = _URL.match(path)
    return match.group(1).lower() if match else None


def is_remote(path: str) -> bool:
    scheme = scheme_of(path)
    return scheme is not None and scheme != "file"


def check_storage_options(options: dict[str, Any]) -> dict[str, Any]:
    """Refuse options that look like secrets: those come from the environment."""
    for name in options:
        lowered = name.lower()
        if any(word in lowered for word in _SECRET_WORDS) and lowered not in ("key_prefix",):
            raise ValueError(f"storage_options.{name}: secrets come from the environment or the "
                             "cloud's default credential chain, not from the program file")
    return options


def redact(text: str) -> str:
    """``text`` with secret values from the environment and URL passwords masked."""
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return re.sub(r"(://[^:/@\s]+:)[^@/\s]+@", r"\1***@", text)


def filesystem(scheme: str, options: dict[str, Any]) -> Any:
    """An fsspec file system for ``scheme``; a missing package names the extra to install."""
    if scheme not in SCHEMES:
        known = ", ".join(sorted(SCHEMES))
        raise SourceError(f"source.path: no file system for {scheme}:// (known: {known}, "
                          "or a local path)")
    protocol, package, extra = SCHEMES[scheme]
    try:
        import fsspec

        # a fresh instance: the credentials and endpoint are read from the environment now
        return fsspec.filesystem(protocol, skip_instance_cache=True, **options)
    except ImportError:
        raise SourceError(f"source.path: {scheme}:// needs the {package} package: "
                          f"pip install 'ceap[{extra}]'") from None
    except Exception as exc:  # a bad option, a credential chain that fails at set-up
        raise SourceError(f"source.path: cannot open {scheme}:// storage: "
                          f"{redact(_first_line(exc))}") from None


def expand(fs: Any, scheme: str, pattern: str) -> list[str]:
    """The object URLs matching ``pattern`` (a URL with optional ``*``, ``**``, ``?``)."""
    try:
        if any(ch in pattern for ch in "*?["):
            found = fs.glob(pattern)
        else:
            found = [pattern] if fs.exists(pattern) else []
    except FileNotFoundError:
        found = []
    except Exception as exc:  # unreachable endpoint, no such bucket, access denied
        raise SourceError(f"source {pattern!r}: cannot list objects: "
                          f"{redact(_first_line(exc))}") from None
    prefix = f"{scheme}://"
    return sorted(p if p.startswith(prefix) else prefix + p.lstrip("/") for p in found)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
