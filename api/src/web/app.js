// The bulk-import web page (docs/web.md): plain JavaScript, no build step, no inline script (it
// runs under the API's Content-Security-Policy). The access token lives in sessionStorage (this
// tab only) and is sent in the Authorization header, never in a URL.
"use strict";

const $ = (id) => document.getElementById(id);
const store = window.sessionStorage;
const FINISHED = ["done", "failed", "cancelled"];
const COLUMNS = ["email", "first_name", "last_name", "phone", "city"];
const PREVIEW_BYTES = 1024 * 1024; // the API reads 64 KiB; a MiB leaves room for gzip
const BAD_PAGE = 10;
const JOBS_PAGE = 10;
let current = null; // the job being shown
let follow = null; // AbortController of the event stream being read
let preview = null; // {file, mapping, mapped}: the file picked and its column mapping
let lastUpload = null; // {file, options, id}: what the page uploaded last, for "import for real"

function token() { return store.getItem("bi_token"); }

// ---- errors: next to their field when the API names one, else in the page's alert ----

function showError(message) { $("error").textContent = message || ""; }
function notice(message) { $("notice").textContent = message || ""; }

// The field each error code is about, per form.
const FIELD_OF = {
  invalid_email: "email", email_taken: "email", weak_password: "password", unauthorized: "password",
  invalid_delimiter: "delimiter", invalid_encoding: "encoding", invalid_max_errors: "max-errors",
  missing_file: "file", upload_too_large: "file", storage_quota_exceeded: "file",
};

function clearFieldErrors() {
  for (const el of document.querySelectorAll(".field-error")) el.textContent = "";
  for (const el of document.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

function fieldError(field, message) {
  $(field + "-error").textContent = message;
  const input = $(field);
  if (input) input.setAttribute("aria-invalid", "true");
}

// Shows `err` next to its field when there is one on the page, else as the page's alert.
function report(err, prefix, fallbackField) {
  let field = FIELD_OF[err.code];
  if (!field && err.code && /column|mapping|header/.test(err.code)) field = "mapping";
  field = field || fallbackField;
  if (field && $(field + "-error") && !$(field + "-error").closest("[hidden]")) fieldError(field, err.message);
  else showError(prefix + ": " + err.message);
}

// An API failure as an Error with the problem's `code`; a page that is not JSON (a proxy's
// error page, a login portal) gets a message a person can act on.
function failure(status, contentType, text) {
  const err = new Error("HTTP " + status);
  err.status = status;
  if (/json/.test(contentType || "")) {
    try {
      const p = JSON.parse(text);
      err.code = p.code;
      err.message = p.detail || p.message || err.message;
    } catch (_) { /* keep the status */ }
  } else if (/html/.test(contentType || "") || /^\s*</.test(text || "")) {
    err.code = "not_json";
    err.message = "the server answered with a web page instead of the service's answer (HTTP " + status +
      "): a proxy or gateway between you and the service may be down or refusing the request; try again later";
  } else if (status === 0) {
    err.message = "the connection broke";
  } else if (text && text.length < 200) {
    err.message += ": " + text.trim();
  }
  return err;
}

async function request(method, path, body, isForm) {
  const headers = {};
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (body !== undefined && !isForm) headers["Content-Type"] = "application/json";
  let r;
  try {
    r = await fetch(path, { method, headers, body: body === undefined || isForm ? body : JSON.stringify(body) });
  } catch (_) { throw failure(0, "", ""); }
  const text = await r.text();
  const type = r.headers.get("Content-Type") || "";
  if (!r.ok) {
    if (r.status === 401 && token() && path !== "/auth/token") signOut();
    throw failure(r.status, type, text);
  }
  if (!text) return null;
  if (!/json/.test(type)) throw failure(r.status, type, text);
  return JSON.parse(text);
}
const api = (method, path, body) => request(method, path, body, false);

// Moves the keyboard focus to a section that has just opened (its heading).
function reveal(section) {
  $(section).hidden = false;
  $(section + "-title").focus();
}

// ---- signing in ----

function signedIn() {
  const on = !!token();
  $("auth").hidden = on;
  $("upload").hidden = !on;
  $("history").hidden = !on;
  $("logout").hidden = !on;
  $("who").textContent = on ? "Signed in as " + (store.getItem("bi_email") || "") : "";
  if (on) refresh();
}

function signOut() {
  store.removeItem("bi_token");
  store.removeItem("bi_email");
  if (follow) follow.abort();
  for (const id of ["job", "preview"]) $(id).hidden = true;
  signedIn();
}

async function logIn(email, password) {
  const t = await api("POST", "/auth/token", { email, password });
  store.setItem("bi_token", t.access_token);
  store.setItem("bi_email", email);
  $("password").value = "";
  signedIn();
  $("upload-title").focus();
}

function authFieldsValid() {
  clearFieldErrors();
  showError("");
  if (!$("email").checkValidity()) fieldError("email", "Enter an email address.");
  if (!$("password").checkValidity()) fieldError("password", "Enter a password of 8 to 128 characters.");
  return !document.querySelector("#auth-form [aria-invalid]");
}

$("auth-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!authFieldsValid()) return;
  try { await logIn($("email").value, $("password").value); } catch (err) {
    report(err.code === "unauthorized" ? Object.assign(err, { message: "Wrong email or password." }) : err, "Log in failed");
  }
});

$("register").addEventListener("click", async () => {
  if (!authFieldsValid()) return;
  try {
    await api("POST", "/auth/register", { email: $("email").value, password: $("password").value });
    await logIn($("email").value, $("password").value);
  } catch (err) { report(err, "Sign up failed"); }
});

$("logout").addEventListener("click", signOut);

// ---- past imports ----

let jobsOffset = 0;

// One page of the organization's jobs with `status` (any when empty). The API has no status
// filter, so a filtered page is gathered from the newest jobs, at most 1000 of them looked at.
// One page of past imports, filtered by status on the server (`status=`).
function fetchJobs(status, offset, limit) {
  const filter = status ? "&status=" + encodeURIComponent(status) : "";
  return api("GET", "/imports?limit=" + limit + "&offset=" + offset + filter);
}

async function refresh() {
  if (!token()) return;
  const status = $("status-filter").value;
  let page;
  try { page = await fetchJobs(status, jobsOffset, JOBS_PAGE); } catch (err) { showError(err.message); return; }
  fill($("jobs"), page.items, (job) => {
    const when = new Date(job.created_at).toLocaleString();
    const tr = rowOf([job.file_name, job.status + (job.dry_run ? " (dry run)" : ""), job.processed_rows, job.error_rows, when]);
    const td = document.createElement("td");
    const b = item("button", "Show");
    b.type = "button";
    b.setAttribute("aria-label", "Show the import of " + job.file_name + " from " + when);
    b.addEventListener("click", () => watch(job));
    td.appendChild(b);
    tr.appendChild(td);
    return tr;
  });
  const shown = page.items.length ? (page.offset + 1) + "–" + (page.offset + page.items.length) : "none";
  $("jobs-caption").textContent = "Past imports" + (status ? " with status " + status : "") + ": " + shown + " of " + page.total;
  $("jobs-prev").disabled = page.offset === 0;
  $("jobs-next").disabled = page.offset + page.items.length >= page.total;
  keepFocus("history-title");
}
$("refresh").addEventListener("click", refresh);
$("status-filter").addEventListener("change", () => { jobsOffset = 0; refresh(); });
$("jobs-prev").addEventListener("click", () => { jobsOffset = Math.max(0, jobsOffset - JOBS_PAGE); refresh(); });
$("jobs-next").addEventListener("click", () => { jobsOffset += JOBS_PAGE; refresh(); });

// ---- small DOM helpers ----

function item(tag, text) {
  const el = document.createElement(tag);
  el.textContent = String(text);
  return el;
}

function rowOf(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(item("td", c));
  return tr;
}

// A pager button that has just been disabled loses the focus: give it to the heading `id`.
function keepFocus(id) {
  if (document.activeElement && document.activeElement.disabled) $(id).focus();
}

function delimiterName(d) { return d === "\t" ? "tab" : d; }

function fill(parent, items, make) { parent.replaceChildren(...items.map(make)); }

// Every script of the page has run by now (they are deferred): show the signed-in state.
document.addEventListener("DOMContentLoaded", signedIn);

