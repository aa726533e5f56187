// The vidqueue console: plain JavaScript against the public API, served by the API itself (no build, no CDN).
"use strict";

const BASE = "/api/v1/ie/requestqueue/apikey";
const KEY = "vidqueue.key";
const TERMINAL = new Set(["success", "failed", "cancelled"]);
const IMAGE = { maxBytes: 10 * 1024 * 1024, minSide: 300, maxRatio: 2.5 };
const PAGE = 10;

const $ = (id) => document.getElementById(id);
// `back` holds the cursors of the pages before this one, so "Newer" retraces "Older".
const state = { models: [], model: null, cursor: null, back: [], pollTimer: null, pollDelay: 1000, lastSeen: "", detailTimer: null, detailStream: null };

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}`, ...(options.headers || {}) };
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const resp = await fetch(BASE + path, { method: options.method || "GET", headers, body: options.body });
  let body = null;
  try { body = await resp.json(); } catch (_) { body = null; }
  if (resp.status === 401) { signOut("Your key was refused; sign in again."); }
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function age(seconds) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

// -- sign in ------------------------------------------------------------------------------------------------
function signOut(message) {
  sessionStorage.removeItem(KEY);
  stopPolling();
  show("signin");
  $("signin-error").textContent = message || "";
  $("apikey").focus();
}

async function signIn(event) {
  event.preventDefault();
  const key = $("apikey").value.trim();
  if (!key) { $("signin-error").textContent = "Paste an API key."; return; }
  sessionStorage.setItem(KEY, key);
  try {
    await loadModels();
    $("apikey").value = "";
    $("signin-error").textContent = "";
    route();
  } catch (err) {
    if (err.status !== 401) $("signin-error").textContent = `Could not reach the server: ${err.message}`;
  }
}

function show(which) {
  for (const id of ["signin", "dashboard", "detail"]) $(id).hidden = id !== which;
  $("nav").hidden = which === "signin";
}

// -- the submit form, generated from the model's parameters --------------------------------------------------
async function loadModels() {
  const body = await api("/models");
  state.models = body.models || [];
  const select = $("model");
  select.replaceChildren(...state.models.map((m) => el("option", { value: m.model, text: m.model })));
  await pickModel(select.value);
}

async function pickModel(id) {
  state.model = await api(`/models/${encodeURIComponent(id)}`);
  $("model-brief").textContent = state.model.brief_description || "";
  $("fields").replaceChildren(...(state.model.parameters || []).map(fieldFor));
  $("fields").dataset.model = id;
}

function fieldFor(p) {
  const id = `f-${p.name}`;
  const label = el("label", { for: id, text: `${p.display_name || p.name}${p.required ? " *" : ""}` });
  const help = el("p", { class: "hint", id: `${id}-hint`, text: p.description || "" });
  const error = el("p", { class: "field-error", id: `${id}-error`, role: "alert" });
  const common = { id, name: p.name, "aria-describedby": `${id}-hint ${id}-error`, "data-type": p.type };
  let input;
  const extra = [];
  if (p.name === "image") return imageField(p, label, help, error, common);
  if (p.options && p.options.length) {
    input = el("select", common, ...(p.required ? [] : [el("option", { value: "", text: "—" })]),
      ...p.options.map((o) => el("option", { value: String(o), text: String(o), selected: String(o) === String(p.default) })));
  } else if (p.type === "number" || p.type === "integer") {
    input = el("input", { ...common, type: "number", min: p.min, max: p.max, step: p.step || (p.type === "integer" ? 1 : "any"), value: p.default ?? "" });
  } else if (p.type === "boolean") {
    input = el("input", { ...common, type: "checkbox", checked: p.default === true });
  } else {
    input = el("textarea", { ...common, maxlength: null, rows: 3 }, p.default ? String(p.default) : "");
    if (p.max_length) {
      const counter = el("p", { class: "hint", id: `${id}-count`, "aria-live": "polite" });
      const update = () => {
        counter.textContent = `${input.value.length} / ${p.max_length} characters`;
        counter.style.color = input.value.length > p.max_length ? "var(--err)" : "";
      };
      input.addEventListener("input", update);
      update();
      extra.push(counter);
    }
  }
  return el("div", { class: "field" }, label, input, ...extra, help, error);
}

function imageField(p, label, help, error, common) {
  const url = el("input", { ...common, type: "url", placeholder: "https://… (or choose a file)" });
  const fileId = `${common.id}-file`;
  const file = el("input", { id: fileId, type: "file", accept: "image/png,image/jpeg" });
  const preview = el("img", { id: "image-preview", alt: "Preview of the chosen image", hidden: true });
  file.addEventListener("change", async () => {
    error.textContent = "";
    url.value = "";
    url.dataset.base64 = "";
    preview.hidden = true;
    const f = file.files[0];
    if (!f) return;
    const problem = await checkImage(f);
    if (problem) { error.textContent = problem; file.value = ""; return; }
    const dataUrl = await new Promise((resolve) => { const r = new FileReader(); r.onload = () => resolve(r.result); r.readAsDataURL(f); });
    url.dataset.base64 = dataUrl;
    preview.src = dataUrl;
    preview.hidden = false;
  });
  const fileLabel = el("label", { for: fileId, text: "…or upload a JPEG/PNG (at most 10 MB, sides ≥ 300 px, ratio within 1:2.5–2.5:1)" });
  return el("div", { class: "field" }, label, url, fileLabel, file, preview, help, error);
}

async function checkImage(f) {
  if (!/^image\/(png|jpeg)$/.test(f.type)) return "The image must be a JPEG or PNG.";
  if (f.size > IMAGE.maxBytes) return `The image is ${(f.size / 1048576).toFixed(1)} MB; at most 10 MB.`;
  const bitmap = await createImageBitmap(f).catch(() => null);
  if (!bitmap) return "The image could not be decoded.";
  const { width, height } = bitmap;
  if (Math.min(width, height) < IMAGE.minSide) return `Both sides must be at least 300 px (got ${width}x${height}).`;
  if (width > height * IMAGE.maxRatio || height > width * IMAGE.maxRatio) return `The aspect ratio must be between 1:2.5 and 2.5:1 (got ${width}x${height}).`;
  return "";
}

function readPayload() {
  const payload = {};
  for (const p of state.model.parameters || []) {
    const input = $(`f-${p.name}`);
    if (!input) continue;
    if (p.name === "image") {
      const value = input.dataset.base64 || input.value.trim();
      if (value) payload.image = value;
      continue;
    }
    if (p.type === "boolean") { payload[p.name] = input.checked; continue; }
    const raw = input.value;
    if (raw === "" || raw === undefined) continue;
    payload[p.name] = p.type === "number" || p.type === "integer" ? Number(raw) : raw;
  }
  return payload;
}

function clearErrors() {
  $("submit-error").textContent = "";
  for (const node of document.querySelectorAll("#fields .field-error")) node.textContent = "";
  for (const node of document.querySelectorAll("#fields [aria-invalid]")) node.removeAttribute("aria-invalid");
}

async function submit(event) {
  event.preventDefault();
  clearErrors();
  const button = $("submit-button");
  button.disabled = true;
  try {
    await api("/requests", { method: "POST", json: { model: state.model.model, payload: readPayload() } });
    // The new request is on the first page.
    state.cursor = null;
    state.back = [];
    await refreshList(true);
  } catch (err) {
    showErrors(err);
  } finally {
    button.disabled = false;
  }
}

function showErrors(err) {
  const details = (err.body && err.body.details) || [];
  let placed = 0;
  for (const d of details) {
    const name = String(d.field || "").replace(/^payload\./, "").split(".")[0];
    const slot = $(`f-${name}-error`);
    if (slot) {
      slot.textContent = d.message;
      $(`f-${name}`).setAttribute("aria-invalid", "true");
      placed++;
    }
  }
  if (!placed || details.length > placed) $("submit-error").textContent = err.message;
  const first = document.querySelector("#fields [aria-invalid=true]");
  if (first) first.focus();
}

// -- the list, polled while something is active --------------------------------------------------------------
function stopPolling() {
  clearTimeout(state.pollTimer);
  state.pollTimer = null;
  clearTimeout(state.detailTimer);
  state.detailTimer = null;
  if (state.detailStream) state.detailStream.abort();
  state.detailStream = null;
}

async function refreshList(reset = false) {
  if (reset) { state.pollDelay = 1000; }
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (state.cursor) query.set("cursor", state.cursor);
  let body;
  try { body = await api(`/requests?${query}`); } catch (err) { schedule(); return; }
  const rows = body.requests || [];
  $("total").textContent = `(${body.total})`;
  // Rebuilding the rows must not take the keyboard's place away: focus returns to the same request's link.
  const focusedRow = document.activeElement && document.activeElement.closest("#requests tr");
  $("requests").tBodies[0].replaceChildren(...rows.map(rowFor));
  if (focusedRow) {
    const link = document.querySelector(`#requests tr[data-id="${CSS.escape(focusedRow.dataset.id)}"] a`);
    if (link) link.focus();
  }
  state.nextCursor = body.next_cursor || null;
  const pagerFocus = document.activeElement && document.activeElement.closest(".pager") ? document.activeElement.id : null;
  $("next-page").disabled = !state.nextCursor;
  $("prev-page").disabled = !state.cursor;
  // A button that just turned off would drop the keyboard's focus to the page top: hand it to the other one.
  if (pagerFocus && $(pagerFocus).disabled) $(pagerFocus === "next-page" ? "prev-page" : "next-page").focus();
  $("page-number").textContent = `Page ${state.back.length + 1}`;
  const fingerprint = rows.map((r) => `${r.request_id}:${r.status}:${r.progress}`).join("|");
  const active = rows.some((r) => !TERMINAL.has(r.status));
  // Back off while nothing changes; stop when nothing on the page can change.
  state.pollDelay = fingerprint === state.lastSeen ? Math.min(state.pollDelay * 1.5, 10000) : 1000;
  state.lastSeen = fingerprint;
  clearTimeout(state.pollTimer);
  state.pollTimer = active ? setTimeout(() => refreshList(), state.pollDelay) : null;
}

function schedule() {
  clearTimeout(state.pollTimer);
  state.pollTimer = setTimeout(() => refreshList(), Math.min((state.pollDelay *= 1.5), 10000));
}

function rowFor(r) {
  const status = el("span", { class: `status-${r.status}`, text: r.status });
  const where = r.status === "queued" && r.queue_position ? el("span", { class: "hint", text: ` #${r.queue_position} in queue` }) : null;
  const bar = el("progress", { max: 100, value: r.progress, "aria-label": `Progress of ${r.request_id}` });
  return el("tr", { "data-id": r.request_id, "data-status": r.status },
    el("td", {}, el("a", { href: `#/requests/${r.request_id}`, text: r.request_id.slice(0, 8), "aria-label": `Request ${r.request_id}` })),
    el("td", { text: r.model }),
    el("td", {}, status, where),
    el("td", {}, bar, el("span", { class: "sr-only", text: `${r.progress}%` })),
    el("td", { text: age(r.created_at) }));
}

// -- one request: followed on its status stream, polled where there is none -----------------------------------
async function showDetail(id, first = false, live = true) {
  show("detail");
  clearTimeout(state.detailTimer);
  let r;
  try { r = await api(`/requests/${encodeURIComponent(id)}`); } catch (err) {
    $("detail-error").textContent = err.status === 404 ? "No such request in your organisation." : err.message;
    return;
  }
  renderDetail(r, first);
  if (TERMINAL.has(r.status) || state.detailStream) return;  // an open stream brings what comes next
  if (live) follow(r.request_id);
  else state.detailTimer = setTimeout(() => { if (location.hash.endsWith(r.request_id)) showDetail(r.request_id, false, false); }, 1000);
}

function renderDetail(r, first = false) {
  $("detail-title").textContent = `Request ${r.request_id}`;
  // Keyboard and screen-reader users land on the page's heading, not wherever focus was.
  if (first) $("detail-title").focus();
  const when = (s) => (s ? new Date(s * 1000).toLocaleString() : "—");
  const facts = [["Model", r.model], ["Status", r.status], ["Progress", `${r.progress}%`],
    ["Queue position", r.queue_position ?? "—"], ["Created", when(r.created_at)], ["Started", when(r.processing_at)],
    ["Finished", when(r.finished_at)], ["Attempts", r.attempts]];
  $("detail-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v), "data-fact": k })]));
  $("detail-error").textContent = r.status === "failed" ? (r.error || "The request failed.") : "";
  $("detail-payload").textContent = JSON.stringify(r.payload, null, 2);
  const video = r.outcome && ((r.outcome.media_urls && r.outcome.media_urls[0] && r.outcome.media_urls[0].url) || r.outcome.video_url);
  const player = $("player");
  if (video && !player.querySelector("video")) {
    player.replaceChildren(el("video", { id: "video", src: video, poster: r.outcome.thumbnail_image_url || null, controls: true, preload: "metadata" }));
  } else if (!video) {
    player.replaceChildren();
  }
  $("download").hidden = !video;
  if (video) $("download").href = video;
  $("cancel").hidden = TERMINAL.has(r.status);
  $("cancel").onclick = async () => {
    $("cancel").disabled = true;
    try { await api(`/requests/${encodeURIComponent(r.request_id)}/cancel`, { method: "POST" }); } catch (err) { $("detail-error").textContent = err.message; }
    $("cancel").disabled = false;
    showDetail(r.request_id);
  };
}

// Server-Sent Events read through fetch (EventSource cannot send the key): one event per status or progress
// change, the request object as its data. A stream that fails or ends before the request does falls back to polling.
async function follow(id) {
  const ctrl = new AbortController();
  state.detailStream = ctrl;
  let ended = false;
  try { ended = await readEvents(id, ctrl.signal); } catch (_) { ended = false; }
  if (state.detailStream !== ctrl) return;  // the page changed meanwhile
  state.detailStream = null;
  if (!ended && location.hash.endsWith(id)) state.detailTimer = setTimeout(() => showDetail(id, false, false), 1000);
}

async function readEvents(id, signal) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}`, Accept: "text/event-stream" };
  const resp = await fetch(`${BASE}/requests/${encodeURIComponent(id)}/events`, { headers, signal });
  if (resp.status === 401) { signOut("Your key was refused; sign in again."); return true; }
  if (!resp.ok || !(resp.headers.get("content-type") || "").startsWith("text/event-stream")) return false;
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, cut).split("\n");
      buffer = buffer.slice(cut + 2);
      const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (!data) continue;  // a keep-alive comment, or the retry hint
      const r = JSON.parse(data);
      renderDetail(r);
      if (TERMINAL.has(r.status)) { reader.cancel().catch(() => {}); return true; }
    }
  }
}

// -- routing -------------------------------------------------------------------------------------------------
function route() {
  stopPolling();
  if (!sessionStorage.getItem(KEY)) { show("signin"); $("apikey").focus(); return; }
  const m = location.hash.match(/^#\/requests\/([^/]+)$/);
  if (m) { $("player").replaceChildren(); $("detail-error").textContent = ""; showDetail(decodeURIComponent(m[1]), true); return; }
  show("dashboard");
  if (!state.models.length) loadModels().catch(() => {});
  refreshList(true);
}

$("signin-form").addEventListener("submit", signIn);
$("signout").addEventListener("click", () => signOut(""));
$("submit-form").addEventListener("submit", submit);
$("model").addEventListener("change", (e) => pickModel(e.target.value));
$("next-page").addEventListener("click", () => { state.back.push(state.cursor); state.cursor = state.nextCursor; refreshList(true); });
$("prev-page").addEventListener("click", () => { state.cursor = state.back.pop() || null; refreshList(true); });
window.addEventListener("hashchange", route);
route();
