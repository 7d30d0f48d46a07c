"""`trioproxy status`: the running proxy's /v1/status as a table for a terminal."""

from collections import Counter
from typing import Any

import httpx


def fetch_status(url: str, key: str | None, timeout: float = 5.0) -> dict[str, Any]:
    """GET <url>/v1/status; `url` may be the server root or its /v1 base URL."""
    base = url.rstrip("/").removesuffix("/v1")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(f"{base}/v1/status", headers=headers, timeout=timeout)
    response.raise_for_status()
    return response.json()


def _window(state: dict[str, Any], source: dict[str, Any] | None = None) -> str:
    """`used/limit`, what the provider says is left, and where the limit comes from."""
    used, limit, remaining = state["used"], state["limit"], state.get("provider_remaining")
    text = f"{used}/{limit}" if limit is not None else f"{used}/-"
    if remaining is not None:
        text += f" ({remaining} left)"
    return f"{text} {_source(source)}" if source else text


def _other_windows(state: dict[str, Any]) -> str:
    """The declared windows, e.g. `requests_4h 3/1000 [configured]`."""
    sources = state.get("limit_sources", {})
    shown = [f"{name} {_window(state[name], sources.get(name))}" for name in state.get("other_windows", ())]
    return ", ".join(shown) or "-"


def _source(source: dict[str, Any]) -> str:
    """`[preset]`, `[configured]`, `[provider 12s ago]`: where a limit comes from, and its age."""
    age = source.get("age_seconds")
    return f"[{source['source']} {age:g}s ago]" if source["source"] == "provider" and age is not None else f"[{source['source']}]"


def _served(served: dict[str, Any]) -> str:
    """Requests served since start and, where the provider's prompt cache held some of their
    prompts, what share of the prompt tokens it held: `12 (84% cached)`."""
    cached, prompt = served.get("cached_tokens") or 0, served.get("prompt_tokens") or 0
    if not cached or not prompt:
        return str(served["requests"])
    return f"{served['requests']} ({cached / prompt:.0%} cached)"


def _model(provider: dict[str, Any]) -> str:
    """The model serving, or which candidates are all missing."""
    if provider.get("model"):
        return str(provider["model"])
    return "none of " + ", ".join(provider.get("candidates") or ["-"])


def render_table(status: dict[str, Any]) -> str:
    """One row per provider account, columns aligned; a route column first when there are several."""
    routes = status.get("routes") or [{"name": status.get("model", "-"), "providers": status["providers"]}]
    several = len(routes) > 1
    accounts = [state for route in routes for provider in route["providers"] for state in provider["accounts"].values()]
    declared = any(state.get("other_windows") for state in accounts)  # windows of other lengths: a column
    # The uncached bucket has a column only where some account has a limit on it.
    windows = ("rpm", "tpm", "utpm", "rpd", "tpd")
    windows = tuple(w for w in windows if w != "utpm" or any((s.get(w) or {}).get("limit") is not None for s in accounts))
    header = ("provider", "model", "account", "usable", "cooldown", *windows, "served", "last error")
    header = ("route", *header) if several else header
    header = (*header, "other windows") if declared else header
    rows = [header]
    for route in routes:
        for provider in route["providers"]:
            for account, state in provider["accounts"].items():
                cooldown = f"{state['cooldown_seconds']}s {state['cooldown_reason']}" if state["cooldown_seconds"] else "-"
                row = (
                    provider["name"],
                    _model(provider),
                    account,
                    "yes" if provider["usable"] else "no",
                    cooldown,
                    *(_window(state[name], state.get("limit_sources", {}).get(name)) for name in windows),
                    _served(provider["served_since_start"]),
                    provider["last_error"] or "-",
                )
                row = (route["name"], *row) if several else row
                rows.append((*row, _other_windows(state)) if declared else row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    if (store := status.get("quota_store") or {}).get("backend") == "redis":
        lines.extend(("", _quota_store_line(store)))
    if status.get("clients"):
        lines.extend(("", *_clients_table(status["clients"])))
    reroutes = status.get("reroutes") or {}
    if reroutes:
        lines.append("")
        lines.append("reroutes: " + ", ".join(f"{reason} x{count}" for reason, count in sorted(reroutes.items())))
    if refusals := status.get("refusals"):
        lines.extend(_refusal_lines(refusals))
    return "\n".join(lines)


def _refusal_lines(refusals: dict[str, Any]) -> list[str]:
    """Error answers by status, unknown paths, and the last refusal's message."""
    def counts(by_status: dict[str, int]) -> str:
        return ", ".join(f"{status} x{count}" for status, count in by_status.items()) or "none"

    lines = ["", f"refused by the proxy: {counts(refusals['refused'])}; other errors: "
                 f"{counts(refusals['failed'])}"]
    if refusals["unknown_paths"]:
        lines.append("unknown paths: " + ", ".join(f"{entry['method']} {entry['path']} x{entry['count']}"
                                                   for entry in refusals["unknown_paths"]))
    if refusals["recent"]:
        last = refusals["recent"][0]
        lines.append(f"last: {last['status']} {last['reason']}: {last['message']}")
    return lines


def _quota_store_line(store: dict[str, Any]) -> str:
    """Where the shared quota lives, whether it answers, and which replica holds leases."""
    state = "connected" if store["connected"] else f"UNREACHABLE for {store['down_seconds']}s ({store['outage_policy']} policy)"
    leases: Counter[str] = Counter()
    for held in store.get("leases", {}).values():
        leases.update(held)
    held = ", ".join(f"{replica} x{count}" for replica, count in sorted(leases.items())) or "none"
    shares = ", ".join(
        f"{provider} {left['requests']} requests" for provider, left in sorted(store.get("shares", {}).items())
    )
    line = f"quota: shared in Redis {store['url']}, {state}, outages {store['outages']}; leases: {held}"
    return f"{line}; this process's shares: {shares}" if shares else line


def _clients_table(clients: dict[str, Any]) -> list[str]:
    """One row per client: weight, usage by provider, tokens, failovers, budgets."""
    header = ("client", "weight", "requests", "by provider", "prompt", "cached", "completion", "failovers",
              "over budget", "budgets")
    rows = [header]
    for name, client in clients.items():
        by_provider: Counter[str] = Counter()
        for providers in client["routes"].values():
            for provider, usage in providers.items():
                if provider != "-" and usage["requests"]:
                    by_provider[provider] += usage["requests"]
        total = client["total"]
        budgets = ", ".join(
            f"{'' if scope == '*' else scope + ' '}{window} {state['used']}/{state['limit']}"
            for scope, windows in client.get("budgets", {}).items() for window, state in windows.items()
        )
        weight = client.get("weight")
        rows.append((name, "-" if weight is None else f"{weight:g}", str(total["requests"]),
                     ", ".join(f"{p} {n}" for p, n in sorted(by_provider.items())) or "-",
                     str(total["prompt_tokens"]), str(total["cached_tokens"]), str(total["completion_tokens"]),
                     str(total["failovers"]), str(total["over_budget"]), budgets or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
