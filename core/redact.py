"""Keeping secrets out of everything that leaves the process: messages, logs, JUnit and release reports.

Secrets enter releasegate in a few known places: a Prometheus URL with `user:password@`, a kubeconfig's
bearer token or client key, the local cluster's admin token. Each of those places keeps a display form
without the secret (`redact_url`) and hands the secret itself to the HTTP client apart from the URL
(`split_credentials`), so no message is ever built with it. `redact` is the second line: a pass over text
on its way out (the release report, the JUnit suite properties) that masks what looks like a credential,
and every secret a module declared with `remember_secret`, wherever it appears.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
# Shorter values are not remembered: masking every "a" or "42" in a report would hide what it says.
MIN_SECRET_LENGTH = 6

# `scheme://user:password@` or `scheme://token@`: the userinfo of a URL, up to the first `@` of the authority.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/?#@\s:]*)"
                           r"(?::(?P<password>[^/?#@\s]*))?@")
# `Authorization: Bearer x`, `'authorization': 'Basic x'`, `Proxy-Authorization=x`: the scheme stays.
_AUTHORIZATION = re.compile(r"(?i)(?P<key>[\"']?(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)"
                            r"(?P<scheme>(?:bearer|basic|token|digest|negotiate)\s+)?(?P<value>[^\s\"',;}]+)")
# A bare `Bearer x` anywhere else (curl lines, client logs).
_BEARER = re.compile(r"(?i)\b(?P<scheme>bearer\s+)(?P<value>[A-Za-z0-9._~+/=-]{4,})")
# `token=x`, `password: x`, `"client-key-data": "x"`, `api_key=x` in query strings, YAML, JSON, reprs.
_KEY_VALUE = re.compile(r"(?i)(?P<key>\b[\w.-]*(?:token|password|passwd|secret|api[_-]?key|key-data|credentials)"
                        r"[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s\"'&,;}]+)")

_remembered: set[str] = set()
_remembered_lock = threading.Lock()


def remember_secret(value: str | None) -> None:
    """Mask `value` wherever `redact` finds it from now on (a token read from a kubeconfig, a password)."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        with _remembered_lock:
            _remembered.add(value)


def remember_basic_auth(user: str, password: str) -> None:
    """Mask the password, and the header value that carries it (`Basic base64(user:password)`)."""
    remember_secret(password)
    if password:
        remember_secret(base64.b64encode(f"{user}:{password}".encode()).decode())


def redact_url(url: str) -> str:
    """`https://user:s3cret@host/x` -> `https://user:***@host/x`; `https://tok@host` -> `https://***@host`."""
    return _URL_USERINFO.sub(_masked_userinfo, url)


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without its userinfo, and `(user, password)` (percent-decoded) when it carried one.

    The HTTP client gets the credentials apart from the URL, so the URL it logs and puts into its errors
    holds none.
    """
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal goes back into brackets
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return bare, (unquote(parts.username or ""), unquote(parts.password or ""))


def redact(text: str) -> str:
    """`text` with URL userinfo, Authorization values, bearer tokens, `token=`/`password=` values and every
    remembered secret replaced by ***."""
    with _remembered_lock:
        secrets = sorted(_remembered, key=len, reverse=True)  # a longer secret first: it may contain another
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URL_USERINFO.sub(_masked_userinfo, text)
    text = _AUTHORIZATION.sub(lambda m: f"{m['key']}{m['scheme'] or ''}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m['scheme']}{MASK}", text)
    return _KEY_VALUE.sub(lambda m: f"{m['key']}{MASK}", text)


def redact_tree(value: Any) -> Any:
    """`redact` applied to every string in nested dicts, lists and tuples (a report's summary)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: redact_tree(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_tree(item) for item in value]
    if isinstance(value, tuple):
        return tuple(redact_tree(item) for item in value)
    return value


def _masked_userinfo(match: re.Match[str]) -> str:
    if match["password"] is None:  # `https://token@host`: the user part is the secret
        return f"{match['scheme']}{MASK}@"
    return f"{match['scheme']}{match['user']}:{MASK}@"
