// The vidqueue console: plain JavaScript against the public API, served by the API itself (no build, no CDN).
"use strict";

const BASE = "/api/v1/ie/requestqueue/apikey";
const KEY = "vidqueue.key";
const DRAFTS = "vidqueue.drafts";  // the form's values, per model, for this tab
const LAST_MODEL = "vidqueue.model";
const VIEW = "vidqueue.view";
const TERMINAL = new Set(["success", "failed", "cancelled"]);
const IMAGE = { maxBytes: 10 * 1024 * 1024, minSide: 300, maxRatio: 2.5 };
const PAGE = 10;
// A browser opens at most six connections to one server over HTTP/1.1: the list follows at most this many
// requests on their streams, leaving the rest for the list itself, thumbnails and the form.
const MAX_LIST_STREAMS = 3;
// Fields shown side by side under the prompt; every other optional field waits under "More options".
const QUICK = new Set(["duration", "aspect_ratio"]);

const $ = (id) => document.getElementById(id);
// `back` holds the cursors of the pages before this one, so "Newer" retraces "Older".
const state = {
  models: [], model: null, cursor: null, back: [], nextCursor: null,
  pollTimer: null, pollDelay: 1000, lastSeen: "", listSeq: 0, refreshQueued: false,
  listStreams: new Map(), noStream: new Set(),
  detailTimer: null, detailStream: null, fresh: null, notice: null, org: null, asking: null,
};

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
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

function readJson(key, fallback) {
  try { return JSON.parse(sessionStorage.getItem(key)) ?? fallback; } catch (_) { return fallback; }
}

// What a person calls a request: its prompt, shortened; the id where there is none.
function titleOf(r, max = 140) {
  const prompt = r.payload && typeof r.payload.prompt === "string" ? r.payload.prompt.trim().replace(/\s+/g, " ") : "";
  if (!prompt) return `Request ${r.request_id.slice(0, 8)}`;
  return prompt.length > max ? `${prompt.slice(0, max - 1)}…` : prompt;
}

function thumbnailOf(r) {
  return (r.status === "success" && r.outcome && r.outcome.thumbnail_image_url) || null;
}

function videoOf(r) {
  const o = r.outcome;
  return (o && ((o.media_urls && o.media_urls[0] && o.media_urls[0].url) || o.video_url)) || null;
}

function badge(status) {
  return el("span", { class: `badge badge-${status}`, text: status });
}

// -- sign in, and who is signed in --------------------------------------------------------------------------
function signOut(message) {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(DRAFTS);
  state.org = null;
  $("whoami").replaceChildren();
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

function loadWhoami() {
  if (!state.org && !state.asking) state.asking = askWhoami().finally(() => { state.asking = null; });
  return state.asking;
}

async function askWhoami() {
  let org = null;
  let prefix = null;
  try {
    const me = await api("/whoami");
    org = me.org_id;
    prefix = me.key_prefix;
  } catch (err) {
    // A server without /whoami: any of the organisation's requests names it.
    if (err.status === 401) return;
    try { org = ((await api("/requests?limit=1")).requests[0] || {}).org_id || null; } catch (_) { org = null; }
  }
  if (!org) return;
  state.org = org;
  $("whoami").replaceChildren("Organisation ", el("strong", { id: "org", text: org }),
    ...(prefix ? [" · key ", el("code", { text: `${prefix}…` })] : []));
}

function show(which) {
  for (const id of ["signin", "dashboard", "detail"]) $(id).hidden = id !== which;
  $("nav").hidden = which === "signin";
}

// -- the submit form, generated from the model's parameters, its values kept per model -----------------------
async function loadModels() {
  const body = await api("/models");
  state.models = body.models || [];
  const select = $("model");
  select.replaceChildren(...state.models.map((m) => el("option", { value: m.model, text: m.model })));
  const last = sessionStorage.getItem(LAST_MODEL);
  if (last && state.models.some((m) => m.model === last)) select.value = last;
  await pickModel(select.value);
}

async function pickModel(id) {
  const model = await api(`/models/${encodeURIComponent(id)}`);
  if ($("model").value !== id) return;  // another model was picked meanwhile
  state.model = model;
  sessionStorage.setItem(LAST_MODEL, id);
  $("model-brief").textContent = model.brief_description || "";
  const params = model.parameters || [];
  const main = params.filter((p) => p.required || p.name === "prompt" || p.name === "image");
  const quick = params.filter((p) => !main.includes(p) && QUICK.has(p.name));
  const more = params.filter((p) => !main.includes(p) && !quick.includes(p));
  const parts = main.map((p) => fieldFor(p, true));
  if (quick.length) parts.push(el("div", { class: "field-grid" }, ...quick.map((p) => fieldFor(p, false))));
  if (more.length) {
    const names = more.map((p) => p.display_name || p.name).join(", ");
    parts.push(el("details", { class: "more", id: "more-options" },
      el("summary", {}, "More options ", el("span", { class: "hint", text: `(${names})` })),
      ...more.map((p) => fieldFor(p, true))));
  }
  $("fields").replaceChildren(...parts);
  restoreDraft(id);
  $("fields").dataset.model = id;
}

function fieldFor(p, describe) {
  const id = `f-${p.name}`;
  const label = el("label", { for: id, text: `${p.display_name || p.name}${p.required ? " *" : ""}` });
  // Beside another field there is no room for a paragraph: the description is still read out, and on hover.
  const help = el("p", { class: describe ? "hint" : "sr-only", id: `${id}-hint`, text: p.description || "" });
  const error = el("p", { class: "field-error", id: `${id}-error`, role: "alert" });
  const common = { id, name: p.name, "aria-describedby": `${id}-hint ${id}-error`, "data-type": p.type, title: describe ? null : p.description };
  if (p.name === "image") return imageField(p, label, help, error, common);
  let input;
  let head = label;
  if (p.options && p.options.length) {
    input = el("select", common, ...(p.required ? [] : [el("option", { value: "", text: "—" })]),
      ...p.options.map((o) => el("option", { value: String(o), text: String(o), selected: String(o) === String(p.default) })));
  } else if (p.type === "number" || p.type === "integer") {
    input = el("input", { ...common, type: "number", min: p.min, max: p.max, step: p.step || (p.type === "integer" ? 1 : "any"), value: p.default ?? "" });
  } else if (p.type === "boolean") {
    input = el("input", { ...common, type: "checkbox", checked: p.default === true });
  } else {
    const rows = p.name === "prompt" ? 3 : 2;
    input = el("textarea", { ...common, rows }, p.default ? String(p.default) : "");
    if (p.max_length) {
      // The count sits beside the label, and is read with the field's description.
      const counter = el("span", { class: "hint counter", id: `${id}-count` });
      input.setAttribute("aria-describedby", `${common["aria-describedby"]} ${id}-count`);
      const update = () => {
        counter.textContent = `${input.value.length} / ${p.max_length} characters`;
        counter.classList.toggle("over", input.value.length > p.max_length);
      };
      input.addEventListener("input", update);
      update();
      head = el("div", { class: "label-row" }, label, counter);
    }
  }
  return el("div", { class: "field" }, head, input, help, error);
}

function imageField(p, label, help, error, common) {
  const url = el("input", { ...common, type: "url", placeholder: "https://… (or upload a file below)" });
  const fileId = `${common.id}-file`;
  const file = el("input", { id: fileId, type: "file", accept: "image/png,image/jpeg", "aria-describedby": `${common.id}-hint ${common.id}-error` });
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
  // The rules are said once, in the model's description below.
  const upload = el("div", { class: "upload-row" }, el("label", { for: fileId, class: "sub", text: "or upload a file:" }), file);
  return el("div", { class: "field" }, label, url, upload, preview, help, error);
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

// A model's draft is what its fields hold (an uploaded image aside: megabytes do not belong in session storage).
function saveDraft() {
  const model = $("fields").dataset.model;
  if (!model || !state.model || state.model.model !== model) return;
  const draft = {};
  for (const p of state.model.parameters || []) {
    const input = $(`f-${p.name}`);
    if (input) draft[p.name] = p.type === "boolean" ? input.checked : input.value;
  }
  const drafts = readJson(DRAFTS, {});
  drafts[model] = draft;
  try { sessionStorage.setItem(DRAFTS, JSON.stringify(drafts)); } catch (_) { /* full: the form still works */ }
}

function restoreDraft(model) {
  const draft = readJson(DRAFTS, {})[model];
  if (!draft) return;
  for (const [name, value] of Object.entries(draft)) {
    const input = $(`f-${name}`);
    if (!input) continue;
    if (input.type === "checkbox") input.checked = Boolean(value);
    else input.value = value;
    input.dispatchEvent(new Event("input"));
  }
  // A value kept under "More options" is shown rather than hidden away.
  const more = $("more-options");
  if (more && [...more.querySelectorAll("input, select, textarea")].some(changedFromDefault)) more.open = true;
}

function changedFromDefault(input) {
  if (input.type === "checkbox") return input.checked !== input.defaultChecked;
  if (input.tagName === "SELECT") return input.selectedIndex !== Math.max(0, [...input.options].findIndex((o) => o.defaultSelected));
  return input.value !== input.defaultValue;
}

function clearErrors() {
  $("submit-error").textContent = "";
  for (const node of document.querySelectorAll("#fields .field-error")) node.textContent = "";
  for (const node of document.querySelectorAll("#fields [aria-invalid]")) node.removeAttribute("aria-invalid");
}

async function submit(event) {
  event.preventDefault();
  clearErrors();
  saveDraft();
  const button = $("submit-button");
  button.disabled = true;
  try {
    const r = await api("/requests", { method: "POST", json: { model: state.model.model, payload: readPayload() } });
    // The new request's page follows it live; the list shows it first, highlighted, when the user comes back.
    state.fresh = r.request_id;
    state.notice = { id: r.request_id, text: "Submitted. This page follows it live; it is also first in your list." };
    state.cursor = null;
    state.back = [];
    location.hash = `#/requests/${encodeURIComponent(r.request_id)}`;
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
      const more = slot.closest("details");
      if (more) more.open = true;
      placed++;
    }
  }
  if (!placed || details.length > placed) $("submit-error").textContent = err.message;
  const first = document.querySelector("#fields [aria-invalid=true]");
  if (first) first.focus();
}

// -- the list: requests followed on their streams, the page polled for what streams do not bring -----------------
function stopPolling() {
  clearTimeout(state.pollTimer);
  state.pollTimer = null;
  state.listSeq++;  // an answer on its way is for a page no longer shown
  for (const ctrl of state.listStreams.values()) ctrl.abort();
  state.listStreams.clear();
  clearTimeout(state.detailTimer);
  state.detailTimer = null;
  if (state.detailStream) state.detailStream.abort();
  state.detailStream = null;
}

// Many streams can end at once: they ask for one refresh between them.
function refreshSoon() {
  if (state.refreshQueued) return;
  state.refreshQueued = true;
  setTimeout(() => { state.refreshQueued = false; if (!$("dashboard").hidden) refreshList(true); }, 0);
}

async function refreshList(reset = false) {
  if (reset) { state.pollDelay = 1000; }
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (state.cursor) query.set("cursor", state.cursor);
  const seq = ++state.listSeq;
  let body;
  try { body = await api(`/requests?${query}`); } catch (err) { if (seq === state.listSeq) schedule(); return; }
  if (seq !== state.listSeq) return;  // a newer refresh, or another page, overtook this one
  const rows = body.requests || [];
  $("total").textContent = `(${body.total})`;
  $("list-empty").hidden = body.total !== 0;
  $("to-list").hidden = !body.total;
  $("to-list").textContent = `Your requests (${body.total}) ↓`;
  renderList(rows);
  state.nextCursor = body.next_cursor || null;
  const pagerFocus = document.activeElement && document.activeElement.closest(".pager") ? document.activeElement.id : null;
  $("next-page").disabled = !state.nextCursor;
  $("prev-page").disabled = !state.cursor;
  // A button that just turned off would drop the keyboard's focus to the page top: hand it to the other one.
  if (pagerFocus && $(pagerFocus).disabled) $(pagerFocus === "next-page" ? "prev-page" : "next-page").focus();
  $("page-number").textContent = `Page ${state.back.length + 1}`;
  if (!state.org && rows.length) loadWhoami();
  follow(rows);
}

// Follow the page's unfinished requests on their status streams (a few at once); poll the page, backing off while
// nothing changes, for those no stream carries and for queue positions (which move without an event).
function follow(rows) {
  const active = rows.filter((r) => !TERMINAL.has(r.status));
  const ids = new Set(active.map((r) => r.request_id));
  for (const [id, ctrl] of state.listStreams) {
    if (!ids.has(id)) { ctrl.abort(); state.listStreams.delete(id); }
  }
  for (const r of active) {
    if (state.listStreams.size >= MAX_LIST_STREAMS) break;
    if (!state.listStreams.has(r.request_id) && !state.noStream.has(r.request_id)) followRow(r.request_id);
  }
  const unfollowed = active.some((r) => !state.listStreams.has(r.request_id) || r.status === "queued");
  const fingerprint = rows.map((r) => `${r.request_id}:${r.status}:${r.progress}:${r.queue_position}`).join("|");
  state.pollDelay = fingerprint === state.lastSeen ? Math.min(state.pollDelay * 1.5, 10000) : 1000;
  state.lastSeen = fingerprint;
  clearTimeout(state.pollTimer);
  state.pollTimer = unfollowed ? setTimeout(() => refreshList(), state.pollDelay) : null;
}

function schedule() {
  clearTimeout(state.pollTimer);
  state.pollTimer = setTimeout(() => refreshList(), Math.min((state.pollDelay *= 1.5), 10000));
}

async function followRow(id) {
  const ctrl = new AbortController();
  state.listStreams.set(id, ctrl);
  let how;
  try { how = await readEvents(id, ctrl.signal, updateRow); } catch (_) { how = "broken"; }
  if (state.listStreams.get(id) !== ctrl) return;  // stopped: the page changed
  state.listStreams.delete(id);
  // Polled from now on rather than reopened in a loop (a server without streams costs one try per request).
  if (how === "broken") state.noStream.add(id);
  refreshSoon();
}

function renderList(rows) {
  const list = $("requests");
  const old = new Map([...list.children].map((li) => [li.dataset.id, li]));
  const nodes = rows.map((r) => { const li = old.get(r.request_id) || itemFor(r); updateItem(li, r); return li; });
  const same = nodes.length === list.children.length && nodes.every((n, i) => list.children[i] === n);
  if (same) return;
  // Rebuilding the list must not take the keyboard's place away: focus returns to the same request's link.
  const focused = document.activeElement && document.activeElement.closest("#requests li");
  list.replaceChildren(...nodes);
  if (focused && focused.isConnected) focused.querySelector("a").focus();
}

function itemFor(r) {
  const link = el("a", { class: "item-title", href: `#/requests/${encodeURIComponent(r.request_id)}` });
  return el("li", { class: "item", "data-id": r.request_id },
    el("div", { class: "thumb empty", "aria-hidden": "true" }),
    el("div", { class: "item-main" }, link, el("p", { class: "meta" })),
    el("div", { class: "state" }, badge(r.status), el("progress", { max: 100, value: r.progress })));
}

function updateItem(li, r) {
  li.dataset.status = r.status;
  li.dataset.progress = String(r.progress);
  li.classList.toggle("fresh", r.request_id === state.fresh);
  const title = titleOf(r);
  const link = li.querySelector("a");
  if (link.textContent !== title) link.textContent = title;
  link.title = (r.payload && r.payload.prompt) || "";
  const where = r.status === "queued" && r.queue_position ? ` · #${r.queue_position} in queue` : "";
  li.querySelector(".meta").textContent = `${r.model} · ${age(r.created_at)}${where}`;
  const old = li.querySelector(".badge");
  if (old.textContent !== r.status) old.replaceWith(badge(r.status));
  const bar = li.querySelector("progress");
  bar.value = r.progress;
  bar.hidden = TERMINAL.has(r.status);
  bar.setAttribute("aria-label", `Progress of “${title}”`);
  const thumb = thumbnailOf(r);
  const box = li.querySelector(".thumb");
  if (thumb && !box.querySelector("img")) {
    // A thumbnail once shown stays: each answer signs its URL afresh, and reloading it would flicker.
    box.classList.remove("empty");
    box.replaceChildren(el("img", { src: thumb, alt: "", loading: "lazy", decoding: "async" }));
  }
}

function updateRow(r) {
  const li = document.querySelector(`#requests li[data-id="${CSS.escape(r.request_id)}"]`);
  if (li) updateItem(li, r);
}

function setView(view) {
  const grid = view === "grid";
  $("requests").className = grid ? "view-grid" : "view-list";
  $("view-grid").setAttribute("aria-pressed", String(grid));
  $("view-list").setAttribute("aria-pressed", String(!grid));
  sessionStorage.setItem(VIEW, grid ? "grid" : "list");
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
  if (!state.org && r.org_id) loadWhoami();
  renderDetail(r, first);
  if (TERMINAL.has(r.status) || state.detailStream) return;  // an open stream brings what comes next
  if (live) followDetail(r.request_id);
  else state.detailTimer = setTimeout(() => { if (location.hash.endsWith(r.request_id)) showDetail(r.request_id, false, false); }, 1000);
}

function renderDetail(r, first = false) {
  if (!location.hash.endsWith(encodeURIComponent(r.request_id))) return;  // a late answer for a page left
  const title = titleOf(r, 200);
  $("detail-title").textContent = title;
  document.title = `${title} · vidqueue`;
  $("detail-notice").textContent = state.notice && state.notice.id === r.request_id ? state.notice.text : "";
  // Keyboard and screen-reader users land on the page's heading, not wherever focus was.
  if (first) $("detail-title").focus();
  const when = (s) => (s ? new Date(s * 1000).toLocaleString() : "—");
  const facts = [["Status", badge(r.status)], ["Progress", `${r.progress}%`],
    ["Queue position", r.queue_position ?? "—"], ["Model", r.model], ["Request", r.request_id],
    ["Created", when(r.created_at)], ["Started", when(r.processing_at)], ["Finished", when(r.finished_at)],
    ["Attempts", r.attempts]];
  $("detail-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }),
    el("dd", { "data-fact": k }, typeof v === "object" ? v : String(v))]));
  $("detail-error").textContent = r.status === "failed" ? (r.error || "The request failed.") : "";
  $("detail-payload").textContent = JSON.stringify(r.payload, null, 2);
  const video = videoOf(r);
  const player = $("player");
  if (video && !player.querySelector("video")) {
    player.replaceChildren(el("video", { id: "video", src: video, poster: r.outcome.thumbnail_image_url || null, controls: true, preload: "metadata", "aria-label": `Video: ${title}` }));
  } else if (!video && !TERMINAL.has(r.status)) {
    const where = r.status === "queued" && r.queue_position ? `#${r.queue_position} in the queue` : `${r.progress}%`;
    player.replaceChildren(el("div", { class: "waiting", id: "waiting" }, badge(r.status),
      el("progress", { max: 100, value: r.progress, "aria-label": "Progress" }), el("span", { text: where })));
  } else if (!video) {
    // Ended without a video: say so where the video would be (a failure's reason follows, in #detail-error).
    const why = r.status === "cancelled" ? "Cancelled: no video was made." : r.status === "failed" ? "No video was made." : "No video.";
    player.replaceChildren(el("div", { class: "waiting ended", id: "ended" }, badge(r.status), el("span", { text: why })));
  }
  $("download").hidden = !video;
  if (video) $("download").href = video;
  fitPlayer();
  $("cancel").hidden = TERMINAL.has(r.status);
  $("cancel").dataset.id = r.request_id;
}

// The player takes the height left below it in the window (the page scrolled to the top), so its controls, along
// its bottom edge, are in view whatever the video's shape; Download sits beside it, or above it on a phone.
function fitPlayer() {
  const box = $("player").firstElementChild;
  if (!box || $("detail").hidden) return;
  const top = box.getBoundingClientRect().top + window.scrollY;
  box.style.maxHeight = `${Math.max(180, Math.floor(window.innerHeight - top - 16))}px`;
}

// Cancel asks first, in a dialog that keeps the keyboard inside it and gives it back to Cancel afterwards.
function askCancel() {
  const dialog = $("confirm-cancel");
  dialog.returnValue = "";
  dialog.showModal();
}

async function confirmed() {
  const id = $("cancel").dataset.id;
  if ($("confirm-cancel").returnValue !== "cancel" || !id) { if (!$("cancel").hidden) $("cancel").focus(); return; }
  $("cancel").disabled = true;
  try {
    const r = await api(`/requests/${encodeURIComponent(id)}/cancel`, { method: "POST" });
    renderDetail(r);
  } catch (err) { $("detail-error").textContent = err.message; }
  $("cancel").disabled = false;
  // A queued request ends at once; a running one when its worker sees the cancel, which the stream will bring.
  if (!state.detailStream) showDetail(id, false, false);
  $("detail-title").focus();
}

// Server-Sent Events read through fetch (EventSource cannot send the key): one event per status or progress
// change, the request object as its data. A stream that fails or ends before the request does falls back to polling.
async function followDetail(id) {
  const ctrl = new AbortController();
  state.detailStream = ctrl;
  let how;
  try { how = await readEvents(id, ctrl.signal, (r) => renderDetail(r)); } catch (_) { how = "broken"; }
  if (state.detailStream !== ctrl) return;  // the page changed meanwhile
  state.detailStream = null;
  if (how !== "ended" && location.hash.endsWith(id)) state.detailTimer = setTimeout(() => showDetail(id, false, false), 1000);
}

// Reads a request's stream, handing each state to `onEvent`. Answers how it went: "ended" (the request did), or
// "broken" (no stream here, or it stopped first).
async function readEvents(id, signal, onEvent) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}`, Accept: "text/event-stream" };
  const resp = await fetch(`${BASE}/requests/${encodeURIComponent(id)}/events`, { headers, signal });
  if (resp.status === 401) { signOut("Your key was refused; sign in again."); return "ended"; }
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

// -- routing -------------------------------------------------------------------------------------------------
function route() {
  stopPolling();
  if (!sessionStorage.getItem(KEY)) { show("signin"); $("apikey").focus(); return; }
  loadWhoami();
  const m = location.hash.match(/^#\/requests\/([^/]+)$/);
  if (m) {
    $("player").replaceChildren();
    $("detail-error").textContent = "";
    $("detail-facts").replaceChildren();
    $("payload-box").open = false;
    showDetail(decodeURIComponent(m[1]), true);
    return;
  }
  document.title = "vidqueue console";
  state.notice = null;
  show("dashboard");
  if (!state.models.length) loadModels().catch(() => {});
  refreshList(true);
}

$("signin-form").addEventListener("submit", signIn);
$("signout").addEventListener("click", () => signOut(""));
$("submit-form").addEventListener("submit", submit);
$("submit-form").addEventListener("input", saveDraft);
$("submit-form").addEventListener("change", (e) => { if (e.target.id !== "model") saveDraft(); });
$("model").addEventListener("change", (e) => { clearErrors(); pickModel(e.target.value); });
$("next-page").addEventListener("click", () => { state.back.push(state.cursor); state.cursor = state.nextCursor; refreshList(true); });
$("prev-page").addEventListener("click", () => { state.cursor = state.back.pop() || null; refreshList(true); });
// On a phone the list is below the form: one tap away.
$("to-list").addEventListener("click", () => { $("list-card").scrollIntoView(); $("list-title").focus(); });
$("view-list").addEventListener("click", () => setView("list"));
$("view-grid").addEventListener("click", () => setView("grid"));
$("cancel").addEventListener("click", askCancel);
$("confirm-cancel").addEventListener("close", confirmed);
window.addEventListener("hashchange", route);
window.addEventListener("resize", fitPlayer);
setView(sessionStorage.getItem(VIEW) || "list");
route();
