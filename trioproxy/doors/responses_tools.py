"""The Responses door's tools: function tools (grouped in namespaces or not) become chat tools
with flat names; tools only OpenAI's own service runs are left out and named.

Codex CLI groups some tools in a `namespace` (`multi_agent_v1`: `spawn_agent`, ...) and expects
calls to them back with that `namespace`; a chat provider knows only flat names. `ToolNames`
keeps the two apart for one request, both ways.
"""

from typing import Any

from attrs import define, field

from ..errors import ProxyError

Qualified = tuple[str | None, str]  # (namespace, name); no namespace for a top-level tool


@define
class ToolNames:
    """Flat names the provider sees, and the (namespace, name) each stands for.

    A namespaced tool keeps its own name when no other offered tool has it, else it becomes
    `namespace__name`; the same request always flattens the same way, so a call in the
    history and the tool it calls agree.
    """

    _qualified: dict[str, Qualified] = field(factory=dict)  # flat -> (namespace, name)
    _flat: dict[Qualified, str] = field(factory=dict)

    def add(self, namespace: str | None, name: str) -> str:
        """Register an offered tool; returns the flat name the provider sees."""
        if (namespace, name) in self._flat:
            return self._flat[namespace, name]
        flat = f"{namespace}__{name}" if namespace is not None and name in self._qualified else name
        self._qualified[flat] = (namespace, name)
        self._flat[namespace, name] = flat
        return flat

    def flat(self, namespace: str | None, name: str) -> str:
        """The flat name of a tool named in the history (offered or not any more)."""
        return self._flat.get((namespace, name), name)

    def qualified(self, flat: str) -> Qualified:
        """What a provider's call to `flat` names on the client's side."""
        return self._qualified.get(flat, (None, flat))


def function_name(names: ToolNames, flat: str) -> dict[str, str]:
    """A `function_call` item's `name`, and its `namespace` when the tool came in one."""
    namespace, name = names.qualified(flat)
    return {"name": name, "namespace": namespace} if namespace else {"name": name}


def hosted_tool_name(tool: Any) -> str | None:
    """The type of a tool the provider cannot run (web_search, file_search, ...); None for a
    function tool or a namespace of them."""
    kind = tool.get("type") if isinstance(tool, dict) else None
    return None if kind in ("function", "namespace") else str(kind)


def chat_tools(tools: Any, names: ToolNames) -> tuple[list[dict[str, Any]], list[str]]:
    """The chat `tools` for the Responses `tools`, and the hosted tools left out (by type).

    Top-level tools keep their names; a namespaced one whose name is taken becomes
    `namespace__name`. Raises ProxyError (400) when `tools` or a function tool in it is malformed.
    """
    if not isinstance(tools, list):
        raise ProxyError(400, "`tools` must be an array.", code="invalid_request", param="tools")
    functions: list[tuple[str | None, dict[str, Any]]] = []
    dropped: list[str] = []
    for tool in tools:
        hosted = hosted_tool_name(tool)
        if hosted is not None:
            dropped.append(hosted)
        elif tool["type"] == "namespace":
            functions += _members(tool)
        else:
            functions.append((None, _checked(tool)))
    for namespace, function in sorted(functions, key=lambda entry: entry[0] is not None):  # stable
        names.add(namespace, function["name"])
    converted = [{"type": "function", "function": {
        "name": names.flat(namespace, function["name"]),
        **{key: function[key] for key in ("description", "parameters", "strict") if function.get(key) is not None}}}
        for namespace, function in functions]
    return converted, list(dict.fromkeys(dropped))


def _members(tool: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """The function tools of a `namespace` tool, each with the namespace's name."""
    namespace = tool.get("name")
    inner = tool.get("tools")
    if not isinstance(namespace, str) or not namespace or not isinstance(inner, list):
        raise ProxyError(400, "A `namespace` tool needs a `name` and an array of `tools`.",
                         code="invalid_request", param="tools")
    if any(hosted_tool_name(member) is not None for member in inner):
        raise ProxyError(400, f"Namespace `{namespace}` may hold function tools only.",
                         code="invalid_request", param="tools")
    return [(namespace, _checked(member)) for member in inner]


def _checked(tool: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise ProxyError(400, "Every function tool needs a `name`.", code="invalid_request", param="tools")
    return tool


def refuse_hosted_tools(dropped: list[str]) -> ProxyError:
    """The 400 for hosted tools when the operator asked to refuse them (`hosted_tools = "refuse"`)."""
    return ProxyError(400, f"trioproxy forwards function tools only; `{dropped[0]}` is a hosted tool the provider does "
                      "not run (this proxy refuses them; `hosted_tools = \"drop\"` leaves them out instead).",
                      code="unsupported_feature", param="tools")
