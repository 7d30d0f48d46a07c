// trioproxy driven by the official `openai` npm package, with Node's built-in test runner.
//
// Run by tests/doors/test_node_sdk.py, which starts the emulated providers and trioproxy and passes:
//   TRIOPROXY_BASE_URL  the proxy's base URL, e.g. http://127.0.0.1:43817/v1
//   EXPECTED_TEXT       the text the emulated Cerebras answers every plain request with
// Each request carries a marker (`node:<case>`) in its last user message, so the pytest side can
// find what the emulated provider received for it.

import assert from "node:assert/strict";
import { test } from "node:test";

import OpenAI from "openai";

const baseURL = process.env.TRIOPROXY_BASE_URL;
const expectedText = process.env.EXPECTED_TEXT;
assert.ok(baseURL, "TRIOPROXY_BASE_URL must be set (run through tests/doors/test_node_sdk.py)");
assert.ok(expectedText, "EXPECTED_TEXT must be set (run through tests/doors/test_node_sdk.py)");

const MODEL = "qwen-3-coder";
const client = new OpenAI({ baseURL, apiKey: "sk-node-anything", maxRetries: 0, timeout: 10_000 });
const limits = { timeout: 15_000 };

const READ_FILE = {
  type: "function",
  function: {
    name: "read_file",
    description: "Read a file from the workspace",
    parameters: {
      type: "object",
      properties: { path: { type: "string" }, encoding: { type: "string" } },
      required: ["path", "encoding"],
    },
  },
};

const LIST_FILES = {
  type: "function",
  function: {
    name: "list_files",
    description: "List the files in a folder",
    parameters: {
      type: "object",
      properties: { folder: { type: "string" }, recursive: { type: "boolean" } },
      required: ["folder"],
    },
  },
};

function ask(marker, text = "Say hello.") {
  return [{ role: "user", content: `${text} node:${marker}` }];
}

async function collect(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

// Tool calls reassembled from their streamed deltas by index, the way SDK users do it.
function reassembleToolCalls(chunks) {
  const calls = new Map();
  for (const chunk of chunks) {
    for (const choice of chunk.choices) {
      for (const delta of choice.delta.tool_calls ?? []) {
        const call = calls.get(delta.index) ?? { id: "", type: "", name: "", arguments: "" };
        call.id += delta.id ?? "";
        call.type = delta.type ?? call.type;
        call.name += delta.function?.name ?? "";
        call.arguments += delta.function?.arguments ?? "";
        calls.set(delta.index, call);
      }
    }
  }
  return [...calls.entries()].sort(([a], [b]) => a - b).map(([, call]) => call);
}

function finishReasons(chunks) {
  return chunks.flatMap((chunk) => chunk.choices.map((c) => c.finish_reason)).filter((r) => r);
}

test("models.list shows qwen-3-coder, as Roo Code reads data[].id", limits, async () => {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  assert.deepEqual(ids, [MODEL]);
});

test("non-streamed completion", limits, async () => {
  const completion = await client.chat.completions.create({ model: MODEL, messages: ask("plain") });
  assert.equal(completion.model, MODEL);
  assert.equal(completion.choices[0].message.content, expectedText);
  assert.equal(completion.choices[0].finish_reason, "stop");
  assert.equal(completion.usage.completion_tokens, expectedText.split(" ").length);
});

test("stream with stream_options.include_usage: usage once, at the end; model qwen-3-coder", limits, async () => {
  const stream = await client.chat.completions.create({
    model: MODEL,
    messages: ask("usage"),
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = await collect(stream);
  assert.ok(chunks.length > 2, `expected several chunks, got ${chunks.length}`);
  for (const chunk of chunks) {
    assert.equal(chunk.model, MODEL);
    assert.equal(chunk.object, "chat.completion.chunk");
  }
  const withUsage = chunks.map((chunk, i) => [i, chunk.usage]).filter(([, usage]) => usage);
  assert.equal(withUsage.length, 1, "exactly one chunk carries usage");
  assert.equal(withUsage[0][0], chunks.length - 1, "usage comes with the last chunk");
  const usage = withUsage[0][1];
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
  assert.equal(text, expectedText);
  assert.equal(usage.completion_tokens, expectedText.split(" ").length);
  assert.ok(usage.prompt_tokens > 0);
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
  assert.deepEqual(finishReasons(chunks), ["stop"]);
});

test("stream without include_usage carries no usage", limits, async () => {
  const chunks = await collect(
    await client.chat.completions.create({ model: MODEL, messages: ask("no-usage"), stream: true }),
  );
  assert.ok(chunks.every((chunk) => !chunk.usage), "no chunk carries usage");
  assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? "").join(""), expectedText);
});

test("streamed tool call: arrives whole, in one delta, with valid JSON arguments", limits, async () => {
  const stream = await client.chat.completions.create({
    model: MODEL,
    messages: ask("tools", "Read README.md."),
    tools: [READ_FILE],
    tool_choice: "auto",
    stream: true,
  });
  const chunks = await collect(stream);
  const argumentDeltas = chunks.flatMap((c) =>
    c.choices.flatMap((choice) => (choice.delta.tool_calls ?? []).map((d) => d.function?.arguments ?? "")),
  );
  assert.equal(argumentDeltas.filter((a) => a).length, 1, "the call arrives whole, never half");
  const calls = reassembleToolCalls(chunks);
  assert.equal(calls.length, 1);
  assert.equal(calls[0].type, "function");
  assert.equal(calls[0].name, "read_file");
  assert.match(calls[0].id, /^call_/);
  assert.deepEqual(JSON.parse(calls[0].arguments), { path: "emulated", encoding: "emulated" });
  assert.deepEqual(finishReasons(chunks), ["tool_calls"]);
  assert.ok(chunks.every((chunk) => chunk.model === MODEL));
});

test("non-streamed tool call has parseable arguments", limits, async () => {
  const completion = await client.chat.completions.create({
    model: MODEL,
    messages: ask("tools-plain", "Read README.md."),
    tools: [READ_FILE],
  });
  const [call] = completion.choices[0].message.tool_calls;
  assert.equal(call.function.name, "read_file");
  assert.deepEqual(JSON.parse(call.function.arguments), { path: "emulated", encoding: "emulated" });
  assert.equal(completion.choices[0].finish_reason, "tool_calls");
});

test("legacy functions / function_call, plain and streamed", limits, async () => {
  const request = {
    model: MODEL,
    messages: ask("functions", "What is the weather?"),
    functions: [
      {
        name: "get_weather",
        description: "Weather for a city",
        parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
      },
    ],
    function_call: "auto",
  };
  const completion = await client.chat.completions.create(request);
  const message = completion.choices[0].message;
  assert.equal(message.function_call.name, "get_weather");
  assert.deepEqual(JSON.parse(message.function_call.arguments), { city: "emulated" });
  assert.equal(completion.choices[0].finish_reason, "function_call");

  const chunks = await collect(await client.chat.completions.create({ ...request, stream: true }));
  let name = "";
  let args = "";
  for (const chunk of chunks) {
    const delta = chunk.choices[0]?.delta;
    name += delta?.function_call?.name ?? "";
    args += delta?.function_call?.arguments ?? "";
  }
  assert.equal(name, "get_weather");
  assert.deepEqual(JSON.parse(args), { city: "emulated" });
  assert.deepEqual(finishReasons(chunks), ["function_call"]);
});

test("max_completion_tokens caps the completion", limits, async () => {
  const completion = await client.chat.completions.create({
    model: MODEL,
    messages: ask("max-completion-tokens"),
    max_completion_tokens: 3,
  });
  assert.equal(completion.choices[0].finish_reason, "length");
  assert.equal(completion.usage.completion_tokens, 3);
  assert.equal(completion.choices[0].message.content, expectedText.split(" ").slice(0, 3).join(" "));
});

test("parallel_tool_calls true with two tools offered", limits, async () => {
  const chunks = await collect(
    await client.chat.completions.create({
      model: MODEL,
      messages: ask("parallel", "Read README.md and list src."),
      tools: [READ_FILE, LIST_FILES],
      parallel_tool_calls: true,
      stream: true,
    }),
  );
  const calls = reassembleToolCalls(chunks);
  assert.deepEqual(calls.map((call) => call.name), ["read_file", "list_files"], "both tools, in order");
  const ids = new Set();
  for (const call of calls) {
    assert.equal(typeof JSON.parse(call.arguments), "object");
    ids.add(call.id);
  }
  assert.equal(ids.size, 2, "every call has its own id");
  assert.deepEqual(finishReasons(chunks), ["tool_calls"]);
});

test("an unknown model surfaces as the SDK's typed NotFoundError (404)", limits, async () => {
  await assert.rejects(
    client.chat.completions.create({ model: "no-such-model", messages: ask("unknown-model") }),
    (error) => {
      assert.ok(error instanceof OpenAI.NotFoundError, `got ${error?.constructor?.name}: ${error}`);
      assert.ok(error instanceof OpenAI.APIError);
      assert.equal(error.status, 404);
      assert.equal(error.code, "model_not_found");
      assert.equal(error.type, "invalid_request_error");
      assert.match(error.message, /no-such-model/);
      assert.ok(error.headers, "the error keeps the response headers");
      return true;
    },
  );
});

test("a bad request surfaces as BadRequestError (400)", limits, async () => {
  await assert.rejects(
    client.chat.completions.create({ model: MODEL, messages: [] }),
    (error) => {
      assert.ok(error instanceof OpenAI.BadRequestError, `got ${error?.constructor?.name}: ${error}`);
      assert.equal(error.status, 400);
      return true;
    },
  );
});

test("a Roo Code shaped request streams a tool call with usage", limits, async () => {
  // What Roo Code's OpenAI-compatible provider sends in native tool mode with prompt caching.
  const stream = await client.chat.completions.create({
    model: MODEL,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
    tools: [READ_FILE, LIST_FILES],
    tool_choice: "auto",
    parallel_tool_calls: false,
    messages: [
      {
        role: "system",
        content: [
          { type: "text", text: "You are Roo, a highly skilled software engineer.", cache_control: { type: "ephemeral" } },
        ],
      },
      {
        role: "user",
        content: [
          { type: "text", text: "<task>Read the README</task> node:roo" },
          { type: "text", text: "<environment_details>cwd: /work</environment_details>", cache_control: { type: "ephemeral" } },
        ],
      },
    ],
  });
  const chunks = await collect(stream);
  assert.ok(chunks.every((chunk) => chunk.model === MODEL));
  const calls = reassembleToolCalls(chunks);
  assert.equal(calls.length, 1);
  assert.equal(calls[0].name, "read_file");
  assert.deepEqual(JSON.parse(calls[0].arguments), { path: "emulated", encoding: "emulated" });
  const usages = chunks.filter((chunk) => chunk.usage);
  assert.equal(usages.length, 1);
  assert.equal(chunks.at(-1), usages[0]);
  assert.ok(usages[0].usage.prompt_tokens > 0);
});
