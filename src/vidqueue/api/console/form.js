// The submit form, generated from the model's parameters; its values are kept per model for this tab.
import { api } from "./api.js";
import { $, el, readJson } from "./dom.js";

const DRAFTS = "vidqueue.drafts";  // the form's values, per model, for this tab
const LAST_MODEL = "vidqueue.model";
const IMAGE = { maxBytes: 10 * 1024 * 1024, minSide: 300, maxRatio: 2.5 };
// Fields shown side by side under the prompt; every other optional field waits under "More options".
const QUICK = new Set(["duration", "aspect_ratio"]);

const form = { models: [], model: null, submitted: () => {} };

/** Wire the form up; `submitted` receives each request it creates. */
export function installForm(submitted) {
  form.submitted = submitted;
  $("submit-form").addEventListener("submit", submit);
  $("submit-form").addEventListener("input", saveDraft);
  $("submit-form").addEventListener("change", (e) => { if (e.target.id !== "model") saveDraft(); });
  $("model").addEventListener("change", (e) => { clearErrors(); pickModel(e.target.value); });
}

export function hasModels() { return form.models.length > 0; }

/** Drop the kept values (on sign-out: they may be another organisation's prompts). */
export function forgetDrafts() { sessionStorage.removeItem(DRAFTS); }

export async function loadModels() {
  const body = await api("/models");
  form.models = body.models || [];
  const select = $("model");
  select.replaceChildren(...form.models.map((m) => el("option", { value: m.model, text: m.model })));
  const last = sessionStorage.getItem(LAST_MODEL);
  if (last && form.models.some((m) => m.model === last)) select.value = last;
  await pickModel(select.value);
}

async function pickModel(id) {
  const model = await api(`/models/${encodeURIComponent(id)}`);
  if ($("model").value !== id) return;  // another model was picked meanwhile
  form.model = model;
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
  for (const p of form.model.parameters || []) {
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
  if (!model || !form.model || form.model.model !== model) return;
  const draft = {};
  for (const p of form.model.parameters || []) {
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
    const r = await api("/requests", { method: "POST", json: { model: form.model.model, payload: readPayload() } });
    form.submitted(r);
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
