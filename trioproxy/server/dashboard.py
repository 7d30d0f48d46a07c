"""The dashboard: a static page shipped in the package and the JSON it polls.

The page, its script, styles and the vendored chart library are public (they hold no data);
the state endpoint needs a client key when the proxy requires one, as the API does.
"""

from collections.abc import Callable
from importlib.resources import files
from typing import Any

from ..errors import ProxyError, quoted
from ..jsoncodec import dump_json
from .asgi import Send, send_response
from .auth import ClientKeys
from .history import TrafficHistory

PREFIX = "/dashboard"
PAGE_PATHS = ("/", PREFIX, PREFIX + "/")
ASSETS_PREFIX = PREFIX + "/assets/"
STATE_PATH = PREFIX + "/api/state"

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
# The page loads nothing from elsewhere and runs no inline code: a string that slipped past
# escaping still could not run a script.
_PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}



def _load_assets() -> dict[str, tuple[bytes, str]]:
    """Every file of the static folder, read once: name -> (bytes, content type)."""
    folder = files("trioproxy.server") / "static"
    assets = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _CONTENT_TYPES:
            assets[entry.name] = (entry.read_bytes(), _CONTENT_TYPES[suffix])
    return assets


class Dashboard:
    """Serves the page, its assets and the live state under PREFIX (and the page at `/`)."""

    def __init__(
        self,
        history: TrafficHistory,
        status: Callable[[], dict[str, Any]],
        client_keys: Callable[[], ClientKeys],
    ) -> None:
        self._history = history
        self._status = status  # providers, accounts and quota, as /v1/status shows them
        self._client_keys = client_keys  # read per request: a reload may change the keys
        self._assets = _load_assets()

    @staticmethod
    def owns(path: str) -> bool:
        return path in PAGE_PATHS or path.startswith(PREFIX + "/")

    async def handle(self, path: str, method: str, authorization: str | None, x_api_key: str | None, send: Send,
                     extra: dict[str, str]) -> None:
        """Answer a request for a path that `owns`; errors are raised as ProxyError."""
        if method != "GET":
            raise ProxyError(405, f"Method {method} is not allowed on {path}; use GET.", code="method_not_allowed", headers={"allow": "GET"})
        if path == STATE_PATH:
            self._client_keys().check(authorization, x_api_key)
            state = {"keys_required": self._client_keys().required, **self._status(), "traffic": self._history.snapshot()}
            await send_response(send, 200, dump_json(state), "application/json", {"cache-control": "no-store", **extra})
            return
        name = "dashboard.html" if path in PAGE_PATHS else path.removeprefix(ASSETS_PREFIX)
        asset = self._assets.get(name) if path in PAGE_PATHS or path.startswith(ASSETS_PREFIX) else None
        if asset is None:
            raise ProxyError(404, f"Unknown path {quoted(path)}.", code="not_found")
        body, content_type = asset
        await send_response(send, 200, body, content_type, {**_PAGE_HEADERS, **extra})


