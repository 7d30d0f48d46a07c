"""What keeps a web page from using the proxy on its operator's keys.

A page on another origin can send a POST without asking (`fetch(url, {mode: "no-cors"})`), but
only with a "simple" content type (text/plain, form-encoded, multipart); a JSON content type
makes the browser ask first (a CORS preflight), which the proxy does not grant unless told to.
So every body the proxy reads as JSON must be declared JSON. A page that rebinds its own name to 127.0.0.1 (DNS
rebinding) is same-origin with the proxy, but its requests name that page's host in `Host`: only
hosts the proxy answers to are served (as Jupyter and Vite check). A request whose `Origin` is
another site's is refused outright (as Ollama does). SDKs and command-line tools send no
`Origin`, a JSON content type and an allowed host, so they pass unchanged.
"""

import ipaddress
from fnmatch import fnmatchcase

from ..errors import ProxyError, quoted

_JSON = "application/json"


def _host_name(host: str) -> str:
    """The name in a Host header, without its port: `[::1]:3000` -> `::1`, `a.b:80` -> `a.b`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def check_json_body(content_type: str | None) -> None:
    """A 415 unless Content-Type names JSON (`application/json`, `application/x+json`, any parameters)."""
    media = (content_type or "").partition(";")[0].strip().lower()
    if media == _JSON or (media.startswith("application/") and media.endswith("+json")):
        return
    raise ProxyError(
        415,
        f"Send the body as JSON with `Content-Type: {_JSON}` (got "
        f"{'none' if content_type is None else '`' + quoted(content_type) + '`'}).",
        code="unsupported_media_type",
    )


class BrowserGuard:
    """The checks every request passes before anything else (Host, Origin), and every body before it is read.

    `bound_host` is the address the socket listens on; `allowed_hosts` adds names (`.example.com`
    also allows its subdomains, `*` any host); `allowed_origins` names other origins (globs such
    as `vscode-webview://*`) a browser may call from, which then get CORS headers.
    """

    def __init__(self, bound_host: str, allowed_hosts: tuple[str, ...], allowed_origins: tuple[str, ...]) -> None:
        self.bound_host = bound_host
        self._hosts = {_host_name(bound_host), "localhost", *(h.strip().lower() for h in allowed_hosts)}
        self._any_host = "*" in self._hosts
        self._suffixes = tuple(h for h in self._hosts if h.startswith("."))
        self._origins = tuple(o.strip().lower().rstrip("/") for o in allowed_origins)

    def host_allowed(self, host: str) -> bool:
        """IP addresses (a rebinding attack needs a name), localhost names, the bound address and
        the configured names."""
        name = _host_name(host)
        return (
            self._any_host
            or name in self._hosts
            or name.endswith(".localhost")
            or _is_ip(name)
            or any(name.endswith(suffix) or name == suffix[1:] for suffix in self._suffixes)
        )

    def cross_origin(self, origin: str, host: str | None) -> bool:
        """Whether `origin` is another site than the proxy's own (`http://` + its Host)."""
        scheme, _, authority = origin.strip().lower().partition("://")
        return not (scheme in ("http", "https") and host is not None and authority == host.strip().lower())

    def origin_allowed(self, origin: str) -> bool:
        origin = origin.strip().lower().rstrip("/")
        return any(fnmatchcase(origin, allowed) for allowed in self._origins)

    def refusal(self, host: str | None, origin: str | None) -> ProxyError | None:
        """Why this request may not be served, or None. A missing Host (HTTP/1.0) passes: a
        browser always sends one."""
        if host is not None and not self.host_allowed(host):
            return ProxyError(
                403,
                f"Host `{quoted(host)}` is not one trioproxy answers to (localhost, an IP address, its bound "
                "address); add the name to `allowed_hosts` to use it. This protects against DNS rebinding.",
                type="invalid_request_error",
                code="host_not_allowed",
            )
        if origin is not None and self.cross_origin(origin, host) and not self.origin_allowed(origin):
            return ProxyError(
                403,
                f"Requests from the web page at `{quoted(origin)}` are refused; add that origin to "
                "`allowed_origins` to let a browser page use the proxy.",
                type="invalid_request_error",
                code="origin_not_allowed",
            )
        return None

    def cors_headers(self, origin: str | None, host: str | None) -> dict[str, str]:
        """CORS headers for a cross-origin request from an allowed origin; none otherwise."""
        if origin is None or not self._origins or not self.cross_origin(origin, host) or not self.origin_allowed(origin):
            return {}
        return {"access-control-allow-origin": origin.strip(), "vary": "origin",
                "access-control-expose-headers": "x-request-id, x-trioproxy-overhead-ms, retry-after"}

    @staticmethod
    def preflight_headers(requested_headers: str | None) -> dict[str, str]:
        """What an allowed origin's preflight (OPTIONS) is granted, beyond `cors_headers`."""
        return {"access-control-allow-methods": "GET, POST, OPTIONS",
                "access-control-allow-headers": requested_headers or "authorization, content-type",
                "access-control-max-age": "600"}
