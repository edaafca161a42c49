// The server's HTTP API as the page uses it: config, transcription (with the API key when one is set),
// and the Server-Timing header of a transcription response.

const KEY_STORE = "asr-playground-api-key"; // sessionStorage: the key is gone when the tab closes

export function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

export function setApiKey(value) {
  if (value) sessionStorage.setItem(KEY_STORE, value);
  else sessionStorage.removeItem(KEY_STORE);
}

export async function fetchConfig() {
  const response = await fetch("/playground/config.json", { cache: "no-store" });
  if (!response.ok) throw new Error(`config: HTTP ${response.status}`);
  return response.json();
}

// "queue;dur=1.2, inference;dur=5.0, cache;desc=hit" -> {queue: 1.2, inference: 5.0, cache: "hit"}
export function parseServerTiming(header) {
  const out = {};
  for (const entry of (header || "").split(",")) {
    const [name, ...params] = entry.trim().split(";");
    if (!name) continue;
    out[name] = true;
    for (const param of params) {
      const [key, value] = param.trim().split("=");
      if (key === "dur") out[name] = Number(value);
      if (key === "desc") out[name] = value.replace(/^"|"$/g, "");
    }
  }
  return out;
}

// The error envelope {"error": {"message", "type", "code"}} as one line; anything else as its status.
function errorMessage(status, body) {
  if (body && typeof body === "object" && body.error) {
    return `${body.error.message} (${status} ${body.error.code || body.error.type || ""})`.trim();
  }
  return `HTTP ${status}${typeof body === "string" && body ? `: ${body.slice(0, 200)}` : ""}`;
}

export async function transcribe(audio, filename, { format, language, words }) {
  const form = new FormData();
  form.append("file", audio, filename);
  form.append("response_format", format);
  form.append("language", language);
  if (format === "verbose_json") {
    form.append("timestamp_granularities[]", "segment");
    if (words) form.append("timestamp_granularities[]", "word");
  }
  const headers = {};
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  const started = performance.now();
  const response = await fetch("/v1/audio/transcriptions", { method: "POST", body: form, headers });
  const isJson = (response.headers.get("content-type") || "").includes("json");
  const body = isJson ? await response.json() : await response.text();
  const result = {
    ok: response.ok,
    status: response.status,
    format,
    body,
    timing: parseServerTiming(response.headers.get("server-timing")),
    roundTripMs: performance.now() - started,
    requestId: response.headers.get("x-request-id"),
  };
  if (!response.ok) result.error = errorMessage(response.status, body);
  return result;
}
