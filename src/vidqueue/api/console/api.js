// The API as the console calls it: the key from this tab's session storage, errors as ApiError, status streams.
export const BASE = "/api/v1/ie/requestqueue/apikey";
export const KEY = "vidqueue.key";
export const TERMINAL = new Set(["success", "failed", "cancelled"]);

// What to do when the server refuses the key (the console signs out); set by whoever shows the sign-in page.
let refused = () => {};
export function onRefused(handler) { refused = handler; }

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

export async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}`, ...(options.headers || {}) };
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const resp = await fetch(BASE + path, { method: options.method || "GET", headers, body: options.body });
  let body = null;
  try { body = await resp.json(); } catch (_) { body = null; }
  if (resp.status === 401) refused();
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}

// Reads a request's stream, handing each state to `onEvent`. Answers how it went: "ended" (the request did), or
// "broken" (no stream here, or it stopped first).
export async function readEvents(id, signal, onEvent) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}`, Accept: "text/event-stream" };
  const resp = await fetch(`${BASE}/requests/${encodeURIComponent(id)}/events`, { headers, signal });
  if (resp.status === 401) { refused(); return "ended"; }
  if (!resp.ok || !(resp.headers.get("content-type") || "").startsWith("text/event-stream")) return "broken";
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return "broken";
    buffer += value.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, cut).split("\n");
      buffer = buffer.slice(cut + 2);
      const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (!data) continue;  // a keep-alive comment, or the retry hint
      const r = JSON.parse(data);
      onEvent(r);
      if (TERMINAL.has(r.status)) { reader.cancel().catch(() => {}); return "ended"; }
    }
  }
}

// What a person calls a request: its prompt, shortened; the id where there is none.
export function titleOf(r, max = 140) {
  const prompt = r.payload && typeof r.payload.prompt === "string" ? r.payload.prompt.trim().replace(/\s+/g, " ") : "";
  if (!prompt) return `Request ${r.request_id.slice(0, 8)}`;
  return prompt.length > max ? `${prompt.slice(0, max - 1)}…` : prompt;
}

export function thumbnailOf(r) {
  return (r.status === "success" && r.outcome && r.outcome.thumbnail_image_url) || null;
}

export function videoOf(r) {
  const o = r.outcome;
  return (o && ((o.media_urls && o.media_urls[0] && o.media_urls[0].url) || o.video_url)) || null;
}
