"""Tracking credentials live in this process's environment only, never in a recorded URI.

``http://user:password@host`` is split: the URI without its user info is what configs, session files,
spools, run params and printed lines hold; the user and password go to ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD`` (a lone ``token@`` to ``MLFLOW_TRACKING_TOKEN``), which MLflow's client
reads on every request. A later process (``resume``, ``sync``) needs them given again the same way.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit, urlunsplit

USERNAME_ENV, PASSWORD_ENV, TOKEN_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"
AUTH_HINT = (
    f"credentials are not stored with a training: give them with {USERNAME_ENV} and {PASSWORD_ENV} "
    f"(or {TOKEN_ENV}), or in the URI of --tracking-uri"
)


def strip_credentials(uri: str) -> str:
    """``uri`` without user info; its user and password (or token) are exported for MLflow's client."""
    if not isinstance(uri, str) or "://" not in uri:
        return uri
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, sep, password = userinfo.partition(":")
    if sep:
        os.environ[USERNAME_ENV] = unquote(user)
        os.environ[PASSWORD_ENV] = unquote(password)
    else:
        os.environ[TOKEN_ENV] = unquote(user)
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


# MLflow says "failed with error code 401 != 200", or names the error (a server with auth answers JSON).
_AUTH_FAILURE = re.compile(
    r"(?i)(error code|status|http)\W{0,3}(401|403)\b|UNAUTHENTICATED|PERMISSION_DENIED|Unauthorized"
)


def is_auth_failure(message: str) -> bool:
    """Whether a tracking error is the server refusing who we are (HTTP 401/403)."""
    return bool(_AUTH_FAILURE.search(message))
