// The vidqueue console: plain JavaScript against the public API, served by the API itself (no build, no CDN).
// This module routes between the pages (sign in, the dashboard, a request) and draws the list and a request;
// api.js talks to the server, form.js owns the submit form, dom.js builds elements.
import { KEY, TERMINAL, api, onRefused, readEvents, thumbnailOf, titleOf, videoOf } from "./api.js";
import { $, age, badge, el } from "./dom.js";
import { forgetDrafts, hasModels, installForm, loadModels } from "./form.js";

const VIEW = "vidqueue.view";
const PAGE = 10;
// A browser opens at most six connections to one server over HTTP/1.1: the list follows at most this many
// requests on their streams, leaving the rest for the list itself, thumbnails and the form.
const MAX_LIST_STREAMS = 3;
// `back` holds the cursors of the pages before this one, so "Newer" retraces "Older".
const state = {
  cursor: null, back: [], nextCursor: null,
  pollTimer: null, pollDelay: 1000, lastSeen: "", listSeq: 0, refreshQueued: false,
  listStreams: new Map(), noStream: new Set(),
  detailTimer: null, detailStream: null, fresh: null, notice: null, org: null, asking: null,
};

// -- sign in, and who is signed in --------------------------------------------------------------------------
function signOut(message) {
  sessionStorage.removeItem(KEY);
  forgetDrafts();
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

// The new request's page follows it live; the list shows it first, highlighted, when the user comes back.
function submitted(r) {
  state.fresh = r.request_id;
  state.notice = { id: r.request_id, text: "Submitted. This page follows it live; it is also first in your list." };
  state.cursor = null;
  state.back = [];
  location.hash = `#/requests/${encodeURIComponent(r.request_id)}`;
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
  if (!hasModels()) loadModels().catch(() => {});
  refreshList(true);
}

$("signin-form").addEventListener("submit", signIn);
$("signout").addEventListener("click", () => signOut(""));
installForm(submitted);
onRefused(() => signOut("Your key was refused; sign in again."));
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
