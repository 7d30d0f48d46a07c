"""A runtime as the server serves it: with the client keys, the operator keys and the browser guard
its settings describe, built when the runtime is swapped in (at start and on each reload)."""

from attrs import frozen

from ..runtime import Runtime
from .auth import ClientKeys, client_keys, operator_keys
from .browser_guard import BrowserGuard


@frozen
class Serving:
    """One runtime and the server's checks for its settings, swapped in whole: a request that
    starts on it checks keys, Host and Origin by the settings it is routed by."""

    runtime: Runtime
    client_keys: ClientKeys
    operator_keys: ClientKeys  # for /healthz details, /v1/status and /metrics
    guard: BrowserGuard  # Host and Origin, checked before anything else

    @classmethod
    def of(cls, runtime: Runtime) -> "Serving":
        """Build the keys and the guard from `runtime.config`. A reload keeps host and port (the
        socket stays bound), so the runtime's settings name the address served."""
        config = runtime.config
        guard = BrowserGuard(config.host, config.allowed_hosts, config.allowed_origins)
        return cls(runtime, client_keys(config), operator_keys(config), guard)
