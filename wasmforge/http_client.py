"""HTTP for the remote cache and the OCI registry client: the one place credentials are sent.

Credentials travel only as *unredirected* headers. urllib copies a request's ordinary headers
onto the request that follows a redirect, so a server answering ``302`` to another host would
receive the user's password or token. ``Request.add_unredirected_header`` keeps them on the
first request alone; a redirected request arrives without them (and a server that wants them
answers 401, which callers report like any other failure). Messages show URLs through
``redact``: no userinfo, no query string.
"""
from __future__ import annotations

import base64
import urllib.parse
import urllib.request


def redact(url: str) -> str:
    """The URL without userinfo and query string: what may be shown in a message or a log.

    Query strings go too because upload locations carry opaque session state and redirected
    blob URLs carry pre-signed storage credentials. A file path passes unchanged.
    """
    p = urllib.parse.urlsplit(url)
    if not p.scheme or not p.netloc:
        return url
    host = p.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if p.port:
        host += f":{p.port}"
    return urllib.parse.urlunsplit((p.scheme, host, p.path, "", ""))


def basic(user: str, password: str) -> str:
    """The value of an ``Authorization`` header for HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def url_credentials(url: str) -> tuple[str, str] | None:
    """``(user, password)`` from a URL's userinfo, percent-decoded; None without one."""
    p = urllib.parse.urlsplit(url)
    if not p.username:
        return None
    return urllib.parse.unquote(p.username), urllib.parse.unquote(p.password or "")


def open_url(method: str, url: str, *, timeout: float, data=None, headers: dict[str, str] | None = None,
             authorization: str | None = None):
    """``urllib.request.urlopen`` for one request, with ``authorization`` (an ``Authorization``
    header value) sent to ``url`` only, never along a redirect. Raises what urlopen raises."""
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if authorization:
        req.add_unredirected_header("Authorization", authorization)
    return urllib.request.urlopen(req, timeout=timeout)
