"""Log lines for requests the proxy refuses itself: why, in the request line's own format."""

import logging

from ..errors import ProxyError

log = logging.getLogger("trioproxy.request")

_MAX_LOGGED = 200  # a path or message is the client's text: keep a line a line


def refusal_reason(error: ProxyError) -> str:
    """`refused: model_not_found (model)`, `refused: invalid_json`, `refused: not_found`."""
    reason = f"refused: {error.code or error.type}"
    return f"{reason} ({error.param})" if error.param else reason


def log_refusal(request_id: str, api: str, method: str, path: str, error: ProxyError) -> None:
    """One INFO line for a request refused before a front door took it (unknown path or
    method, a missing key), in the request line's format plus method and path."""
    log.info(
        "request %s api=%s provider=- reason=%r status=%d method=%s path=%r",
        request_id,
        api,
        refusal_reason(error),
        error.status,
        method[:16],
        path[:_MAX_LOGGED],
    )
