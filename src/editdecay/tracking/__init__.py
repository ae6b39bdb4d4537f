"""Tracking: ``runs.py`` and ``server.py`` are the only modules that import mlflow. This package
module does not, so mlflow-free code (the sweep grid, dry runs) can resolve where runs go."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from editdecay.errors import ConfigError

# Stores MLflow itself knows (sqlalchemy dialects may carry a driver: postgresql+psycopg2).
KNOWN_SCHEMES = ("file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc", "uc")


def resolve_tracking_uri(uri: str | None = None, cwd: Path | None = None) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else the embedded ``sqlite:///<cwd>/mlflow.db`` (under
    ``EDITDECAY_HOME`` or a Ray job: in the lasting state dir, ``editdecay.paths``)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        check_tracking_uri(uri, "tracking URI" if uri != os.environ.get("MLFLOW_TRACKING_URI") else "MLFLOW_TRACKING_URI")
        return uri
    from editdecay.paths import default_store_dir

    return f"sqlite:///{default_store_dir(cwd) / 'mlflow.db'}"


class TrackingURIError(ConfigError, ValueError):
    """A tracking URI MLflow cannot use (a ValueError too, so config validation reports it by key)."""


def check_tracking_uri(uri: str, what: str | None = "tracking.uri") -> None:
    """One line for a scheme MLflow cannot use (a typo such as ``htp://``)."""
    scheme = urlsplit(uri).scheme.split("+")[0].lower() if "://" in uri or uri.startswith("sqlite:") else ""
    if len(scheme) == 1:  # a Windows drive letter: a plain path
        scheme = ""
    if scheme in ("http", "https"):
        try:
            parts = urlsplit(uri)
            parts.port  # noqa: B018  raises for a port that is not a number in 0..65535
        except ValueError as err:
            raise TrackingURIError(f"{what + ': ' if what else ''}{str(err)[:1].lower()}{str(err)[1:]} in {redact_uri(uri)}; use http(s)://host:port "
                                   "with a port in 1..65535") from None
        if not parts.hostname:
            raise TrackingURIError(f"{what + ': ' if what else ''}no host in {redact_uri(uri)}; use http(s)://host:port")
    if scheme and scheme not in KNOWN_SCHEMES:
        raise TrackingURIError(f"{what + ': ' if what else ''}unknown scheme '{scheme}' in {redact_uri(uri)}; use http(s)://host:port, "
                         "sqlite:///path/mlflow.db, file:///path or a database URL (postgresql://, mysql://)")


_SECRET_QUERY = re.compile(r"(?i)((?:password|passwd|pwd|token|secret|access_key|key)=)[^&]*")


def redact_uri(uri: str | None) -> str | None:
    """``scheme://user:***@host/...``: the URI without its password or token, for logs and params."""
    if not uri or "://" not in uri:
        return uri
    parts = urlsplit(uri)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
    query = _SECRET_QUERY.sub(r"\1***", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return uri  # unchanged, byte for byte (urlunsplit would turn sqlite://// into sqlite://)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
