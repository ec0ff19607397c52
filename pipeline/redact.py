"""Credentials never leave the connection: URIs are redacted wherever they are recorded or printed."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"
# user:password@ (or token@) after a scheme, anywhere in a line of text.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
_SECRET_QUERY = re.compile(r"(?i)([?&](?:token|access_token|password|passwd|secret|key|sig|signature)=)[^&\s]+")


def redact_uri(uri: str) -> str:
    """``http://user:pw@host/x`` -> ``http://user:***@host/x``; a token alone as user info becomes ``***``."""
    if not isinstance(uri, str) or "://" not in uri:
        return uri
    parts = urlsplit(uri)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, sep, _ = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{host}" if sep else f"{REDACTED}@{host}"
    query = _SECRET_QUERY.sub(lambda m: m.group(1) + REDACTED, "?" + parts.query)[1:] if parts.query else ""
    if (netloc, query) == (parts.netloc, parts.query):
        return uri  # nothing hidden: as given (urlunsplit would turn sqlite:////abs into sqlite://abs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URI's credentials in a free text (an error message, a log line) replaced by ``***``."""

    def hide(match: re.Match[str]) -> str:
        user, sep, _ = match.group("userinfo").partition(":")
        return f"{match.group('scheme')}{user}:{REDACTED}@" if sep else f"{match.group('scheme')}{REDACTED}@"

    return _SECRET_QUERY.sub(lambda m: m.group(1) + REDACTED, _USERINFO.sub(hide, text))
