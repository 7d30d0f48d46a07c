"""Google's GenerateContentRequest as the pipeline's chat body: contents, tools, settings.

Google's JSON accepts every field name in camelCase or snake_case (its docs' curl examples use
`system_instruction`); both are read. Unknown names are refused as Google refuses them.
"""

import re
from functools import lru_cache
from typing import Any

from ..errors import ProxyError, quoted
from ..jsoncodec import dump_json

# Accepted and left out: settings for Google's own service that have nothing to forward.
_IGNORED = frozenset({"safetySettings", "labels", "model"})
_REQUEST = frozenset({"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "cachedContent",
                      *_IGNORED})
_IGNORED_CONFIG = frozenset({"thinkingConfig", "mediaResolution", "enableEnhancedCivicAnswers", "responseLogprobs",
                             "logprobs", "responseModalities"})
_CONFIG = frozenset({"temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences",
                     "presencePenalty", "frequencyPenalty", "seed", "responseMimeType", "responseSchema",
                     "responseJsonSchema", "speechConfig", *_IGNORED_CONFIG})
_SAMPLING = {"temperature": "temperature", "topP": "top_p", "topK": "top_k", "presencePenalty": "presence_penalty",
             "frequencyPenalty": "frequency_penalty", "seed": "seed"}
_PART_DATA = ("text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
              "codeExecutionResult")
_PART = frozenset({*_PART_DATA, "thought", "thoughtSignature", "videoMetadata", "partMetadata", "mediaResolution"})
_DECLARATION = frozenset({"name", "description", "parameters", "parametersJsonSchema", "response",
                          "responseJsonSchema", "behavior"})
# Google's Schema fields that JSON Schema spells the same; the rest are converted or dropped.
_SCHEMA_INTEGERS = frozenset({"minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties"})
_SCHEMA_DROPPED = frozenset({"propertyOrdering", "example", "nullable"})
_MODES = {"AUTO": "auto", "VALIDATED": "auto", "ANY": "required", "NONE": "none"}


def bad(message: str) -> ProxyError:
    return ProxyError(400, message, code="invalid_argument")


@lru_cache(maxsize=512)
def _camel(name: str) -> str:
    return re.sub(r"_([a-z])", lambda match: match.group(1).upper(), name)


def fields(value: Any, where: str, known: frozenset[str]) -> dict[str, Any]:
    """An object's fields under their camelCase names; a 400 in Google's words for anything else."""
    if not isinstance(value, dict):
        raise bad(f"Invalid value at '{where}': expected an object.")
    named: dict[str, Any] = {}
    for key, item in value.items():
        name = _camel(key)
        if name not in known:
            raise bad(f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': Cannot find field.")
        named[name] = item
    return named


def chat_body(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The chat body of a GenerateContentRequest (already a dict); a 400 naming what is wrong."""
    request = fields(body, "request", _REQUEST)
    if request.get("cachedContent") is not None:
        raise ProxyError(400, "trioproxy keeps no cached contents: send the whole conversation in `contents`.",
                         code="unsupported_feature")
    chat: dict[str, Any] = {"model": model, "messages": [*_system(request.get("systemInstruction")),
                                                         *Conversation().messages(request.get("contents"))]}
    declared = _tools(request.get("tools"))
    if request.get("toolConfig") is not None:
        declared = _tool_config(request["toolConfig"], declared, chat)
    if declared:
        chat["tools"] = declared
    if request.get("generationConfig") is not None:
        _generation_config(request["generationConfig"], chat)
    return chat


def _system(instruction: Any) -> list[dict[str, Any]]:
    if instruction is None:
        return []
    if isinstance(instruction, str):  # Google's JSON takes a Content; a bare string is forgiven
        text = instruction
    else:
        content = fields(instruction, "system_instruction", frozenset({"role", "parts"}))
        parts = content.get("parts")
        if not isinstance(parts, list):
            raise bad("system_instruction.parts must be an array of text parts.")
        texts = [fields(part, "system_instruction.parts", _PART).get("text") for part in parts]
        if not all(isinstance(text, str) for text in texts):
            raise bad("system_instruction: only text parts are supported.")
        text = "\n".join(texts)
    return [{"role": "system", "content": text}] if text else []


class Conversation:
    """`contents` as chat messages. A functionCall without an id gets one from its position, so
    the same history gets the same ids on every turn (and keeps the provider's prompt cache);
    a functionResponse answers the call of the previous model turn with its id, or its name."""

    def __init__(self) -> None:
        self._open_calls: list[tuple[str, str]] = []  # (id, name) of the last model turn's unanswered calls

    def messages(self, contents: Any) -> list[dict[str, Any]]:
        if not isinstance(contents, list) or not contents:
            raise bad("* GenerateContentRequest.contents: contents is not specified")
        messages: list[dict[str, Any]] = []
        for index, content in enumerate(contents):
            turn = fields(content, f"contents[{index}]", frozenset({"role", "parts"}))
            role = turn.get("role") or "user"
            parts = turn.get("parts")
            if not isinstance(parts, list) or not parts:
                raise bad(f"* GenerateContentRequest.contents[{index}].parts: contents.parts must not be empty.")
            checked = [self._part(part, index) for part in parts]
            if role == "model":
                messages.append(self._model_turn(checked, index))
            elif role in ("user", "function"):
                messages += self._user_turn(checked, index)
            else:
                raise bad(f"Please use a valid role: user, model. (contents[{index}].role is {role!r})")
        return messages

    @staticmethod
    def _part(part: Any, index: int) -> dict[str, Any]:
        named = fields(part, f"contents[{index}].parts", _PART)
        data = [key for key in _PART_DATA if key in named]
        if len(data) != 1:
            raise bad(f"contents[{index}].parts: a part must hold exactly one of {', '.join(_PART_DATA)}.")
        if data[0] in ("executableCode", "codeExecutionResult"):
            raise ProxyError(400, f"contents[{index}]: `{data[0]}` parts come from Google's code execution, "
                             "which the provider does not run.", code="unsupported_feature")
        return named

    def _model_turn(self, parts: list[dict[str, Any]], index: int) -> dict[str, Any]:
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for position, part in enumerate(parts):
            if "text" in part:
                if not isinstance(part["text"], str):
                    raise bad(f"contents[{index}].parts[{position}].text must be a string.")
                if not part.get("thought"):  # the model's own thoughts stay out of the next turn
                    texts.append(part["text"])
            elif "functionCall" in part:
                call = fields(part["functionCall"], f"contents[{index}].parts[{position}].function_call",
                              frozenset({"id", "name", "args"}))
                if not isinstance(call.get("name"), str) or not call["name"]:
                    raise bad(f"contents[{index}].parts[{position}].function_call.name is required.")
                args = call.get("args") if call.get("args") is not None else {}
                if not isinstance(args, dict):
                    raise bad(f"contents[{index}].parts[{position}].function_call.args must be an object.")
                call_id = call["id"] if isinstance(call.get("id"), str) and call["id"] else f"call_{index}_{position}"
                calls.append({"id": call_id, "type": "function",
                              "function": {"name": call["name"], "arguments": dump_json(args).decode()}})
            else:
                kind = next(key for key in _PART_DATA if key in part)
                raise bad(f"contents[{index}].parts[{position}]: a model turn cannot hold `{quoted(kind)}` parts.")
        self._open_calls = [(call["id"], call["function"]["name"]) for call in calls]
        # No content is null only beside calls: an assistant message of thoughts alone stays a message.
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or (None if calls else "")}
        if calls:
            message["tool_calls"] = calls
        return message

    def _user_turn(self, parts: list[dict[str, Any]], index: int) -> list[dict[str, Any]]:
        """Function responses become tool messages, which come first: they answer the last turn."""
        results: list[dict[str, Any]] = []
        content: list[dict[str, Any]] = []
        for position, part in enumerate(parts):
            where = f"contents[{index}].parts[{position}]"
            if "text" in part:
                if not isinstance(part["text"], str):
                    raise bad(f"{where}.text must be a string.")
                if not part.get("thought"):
                    content.append({"type": "text", "text": part["text"]})
            elif "functionResponse" in part:
                results.append(self._result(part["functionResponse"], where, content))
            elif "inlineData" in part:
                content.append(_image(part["inlineData"], where))
            elif "fileData" in part:
                raise ProxyError(400, f"{where}: `fileData` parts cannot be forwarded (the provider cannot read "
                                 "Google's files); send images as inlineData.", code="unsupported_feature")
            else:
                raise bad(f"{where}: a user turn cannot hold `functionCall` parts; they belong to model turns.")
        self._open_calls = []
        if not content:
            return results
        if all(part["type"] == "text" for part in content):
            return [*results, {"role": "user", "content": "\n".join(part["text"] for part in content)}]
        return [*results, {"role": "user", "content": content}]

    def _result(self, response: Any, where: str, content: list[dict[str, Any]]) -> dict[str, Any]:
        """The tool message of a functionResponse; images among its `parts` join the user message
        that follows the tool messages (a tool message carries text only)."""
        named = fields(response, f"{where}.function_response",
                       frozenset({"id", "name", "response", "parts", "willContinue", "scheduling"}))
        attached = named.get("parts") or []
        if not isinstance(attached, list):
            raise bad(f"{where}.function_response.parts must be an array.")
        for position, part in enumerate(attached):
            blob = fields(part, f"{where}.function_response.parts", frozenset({"inlineData"})).get("inlineData")
            content.append(_image(blob, f"{where}.function_response.parts[{position}]"))
        name, call_id = named.get("name"), named.get("id")
        match = next((open_call for open_call in self._open_calls if call_id and open_call[0] == call_id), None)
        match = match or next((open_call for open_call in self._open_calls if open_call[1] == name), None)
        if match is None:
            raise bad(f"{where}: the functionResponse for `{quoted(name)}` answers no functionCall of the previous model "
                      "turn (responses are matched by id, else by name).")
        self._open_calls.remove(match)
        return {"role": "tool", "tool_call_id": match[0], "content": _result_text(named.get("response"))}


def _result_text(response: Any) -> str:
    """A function's response object as the tool message's text: a lone string field as itself
    (Gemini CLI sends `{"output": ...}` or `{"error": ...}`), anything else as JSON."""
    if isinstance(response, dict) and len(response) == 1:
        (key, value), = response.items()
        if isinstance(value, str):
            return f"Error: {value}" if key == "error" else value
    return dump_json(response if response is not None else {}).decode()


def _image(data: Any, where: str) -> dict[str, Any]:
    blob = fields(data, f"{where}.inline_data", frozenset({"mimeType", "data", "displayName"}))
    mime, encoded = blob.get("mimeType"), blob.get("data")
    if not isinstance(mime, str) or not isinstance(encoded, str):
        raise bad(f"{where}.inline_data needs a mime_type and base64 data.")
    if not mime.startswith("image/"):
        raise ProxyError(400, f"{where}: inline `{mime}` data cannot be forwarded; the provider takes images only.",
                         code="unsupported_feature")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{encoded}"}}


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad("tools must be an array of Tool objects.")
    converted: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise bad(f"tools[{index}] must be an object.")
        for key, declarations in tool.items():
            if _camel(key) != "functionDeclarations":
                raise ProxyError(400, f"tools[{index}].{key} is a tool Google runs itself, which the provider does "
                                 "not; trioproxy forwards functionDeclarations only.", code="unsupported_feature")
            if not isinstance(declarations, list):
                raise bad(f"tools[{index}].function_declarations must be an array.")
            converted += [_declaration(item, f"tools[{index}].function_declarations") for item in declarations]
    return converted


def _declaration(declaration: Any, where: str) -> dict[str, Any]:
    named = fields(declaration, where, _DECLARATION)
    if not isinstance(named.get("name"), str) or not named["name"]:
        raise bad(f"{where}: every function declaration needs a name.")
    if named.get("parametersJsonSchema") is not None:
        parameters = named["parametersJsonSchema"]
        if not isinstance(parameters, dict):
            raise bad(f"{where}.parameters_json_schema must be an object.")
    elif named.get("parameters") is not None:
        parameters = json_schema(named["parameters"], f"{where}.parameters")
    else:
        parameters = {"type": "object", "properties": {}}
    function = {"name": named["name"], "parameters": parameters}
    if isinstance(named.get("description"), str):
        function["description"] = named["description"]
    return {"type": "function", "function": function}


def json_schema(schema: Any, where: str) -> dict[str, Any]:
    """Google's Schema (OpenAPI's subset, upper-case types) as JSON Schema."""
    if not isinstance(schema, dict):
        raise bad(f"{where} must be a Schema object.")
    converted: dict[str, Any] = {}
    for key, value in schema.items():
        name = _camel(key)
        if name == "type":
            if isinstance(value, str) and value.upper() != "TYPE_UNSPECIFIED":
                converted["type"] = value.lower()
        elif name == "properties" and isinstance(value, dict):
            converted["properties"] = {prop: json_schema(sub, f"{where}.properties.{prop}") for prop, sub in value.items()}
        elif name == "items":
            converted["items"] = json_schema(value, f"{where}.items")
        elif name == "anyOf" and isinstance(value, list):
            converted["anyOf"] = [json_schema(sub, f"{where}.any_of") for sub in value]
        elif name in _SCHEMA_INTEGERS and isinstance(value, str) and value.isdigit():
            converted[name] = int(value)  # int64 fields travel as strings in Google's JSON
        elif name not in _SCHEMA_DROPPED:
            converted[name] = value
    if schema.get("nullable") is True and isinstance(converted.get("type"), str):
        converted["type"] = [converted["type"], "null"]
    return converted


def _tool_config(config: Any, declared: list[dict[str, Any]], chat: dict[str, Any]) -> list[dict[str, Any]]:
    """functionCallingConfig as tool_choice; allowed names narrow the tools offered."""
    named = fields(config, "tool_config", frozenset({"functionCallingConfig", "retrievalConfig",
                                                     "includeServerSideToolInvocations"}))
    calling = fields(named.get("functionCallingConfig") or {}, "tool_config.function_calling_config",
                     frozenset({"mode", "allowedFunctionNames", "streamFunctionCallArguments"}))
    mode = calling.get("mode") or "AUTO"
    if mode not in _MODES and mode != "MODE_UNSPECIFIED":
        raise bad(f"tool_config.function_calling_config.mode must be AUTO, ANY, NONE or VALIDATED, not {mode!r}.")
    allowed = calling.get("allowedFunctionNames")
    if allowed is not None:
        if not isinstance(allowed, list) or not all(isinstance(name, str) for name in allowed):
            raise bad("tool_config.function_calling_config.allowed_function_names must be an array of names.")
        unknown = sorted(set(allowed) - {tool["function"]["name"] for tool in declared})
        if unknown:
            raise bad(f"allowed_function_names names `{unknown[0]}`, which no function declaration declares.")
        declared = [tool for tool in declared if tool["function"]["name"] in allowed]
    choice = _MODES.get(mode, "auto")
    if choice == "required" and len(declared) == 1:
        choice = {"type": "function", "function": {"name": declared[0]["function"]["name"]}}
    if declared or choice == "none":
        chat["tool_choice"] = choice
    return declared


def _generation_config(config: Any, chat: dict[str, Any]) -> None:
    named = fields(config, "generation_config", _CONFIG)
    for key, chat_key in _SAMPLING.items():
        if named.get(key) is not None:
            chat[chat_key] = named[key]
    if named.get("maxOutputTokens") is not None:
        budget = named["maxOutputTokens"]
        if type(budget) is not int or budget < 1:
            raise bad("generation_config.max_output_tokens must be a positive integer.")
        chat["max_tokens"] = budget
    if named.get("candidateCount") not in (None, 1):
        raise ProxyError(400, "trioproxy answers with one candidate: candidate_count must be 1.",
                         code="unsupported_feature")
    stops = named.get("stopSequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(stop, str) for stop in stops):
            raise bad("generation_config.stop_sequences must be an array of strings.")
        chat["stop"] = stops
    if named.get("speechConfig") is not None or any(
            modality not in ("TEXT", "text") for modality in named.get("responseModalities") or []):
        raise ProxyError(400, "trioproxy answers with text only.", code="unsupported_feature")
    if (response_format := _response_format(named)) is not None:
        chat["response_format"] = response_format


def _response_format(config: dict[str, Any]) -> dict[str, Any] | None:
    mime = config.get("responseMimeType")
    schema = config.get("responseJsonSchema")
    if schema is None and config.get("responseSchema") is not None:
        schema = json_schema(config["responseSchema"], "generation_config.response_schema")
    if mime in (None, "text/plain") and schema is None:
        return None
    if mime != "application/json":
        raise ProxyError(400, f"response_mime_type {mime!r} cannot be honoured: trioproxy supports text/plain and "
                         "application/json (with or without a schema).", code="unsupported_feature")
    if schema is None:
        return {"type": "json_object"}
    if not isinstance(schema, dict):
        raise bad("generation_config.response_json_schema must be an object.")
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
