// The bulk-import web page: plain JavaScript, no build step, no inline script (it runs under
// the API's Content-Security-Policy). The access token lives in sessionStorage (this tab
// only) and is sent in the Authorization header, never in a URL.
"use strict";

const $ = (id) => document.getElementById(id);
const store = window.sessionStorage;
let current = null; // the job being shown
let follow = null; // AbortController of the event stream being read

function token() { return store.getItem("bi_token"); }

function showError(message) { $("error").textContent = message || ""; }

async function api(method, path, body) {
  const headers = {};
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) {
    if (r.status === 401 && token() && path !== "/auth/token") signOut();
    throw new Error((data && data.message) || ("HTTP " + r.status));
  }
  return data;
}

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
  $("job").hidden = true;
  signedIn();
}

async function logIn(email, password) {
  const t = await api("POST", "/auth/token", { email, password });
  store.setItem("bi_token", t.access_token);
  store.setItem("bi_email", email);
  $("password").value = "";
  signedIn();
}

$("auth-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  showError("");
  try { await logIn($("email").value, $("password").value); } catch (err) { showError("Log in failed: " + err.message); }
});

$("register").addEventListener("click", async () => {
  showError("");
  if (!$("auth-form").reportValidity()) return;
  try {
    await api("POST", "/auth/register", { email: $("email").value, password: $("password").value });
    await logIn($("email").value, $("password").value);
  } catch (err) { showError("Sign up failed: " + err.message); }
});

$("logout").addEventListener("click", signOut);

// Picking or dropping a file.
const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  if (e.dataTransfer && e.dataTransfer.files.length) {
    $("file").files = e.dataTransfer.files;
    chosen();
  }
});
function chosen() {
  const f = $("file").files[0];
  $("chosen").textContent = f ? f.name + " (" + f.size.toLocaleString() + " bytes)" : "";
}
$("file").addEventListener("change", chosen);

function randomKey() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return "web-" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

$("upload-form").addEventListener("submit", (e) => {
  e.preventDefault();
  showError("");
  const file = $("file").files[0];
  if (!file) { showError("Choose a file first."); return; }
  const query = "?mode=" + encodeURIComponent($("mode").value) + ($("dry-run").checked ? "&dry_run=true" : "");
  const form = new FormData();
  form.append("file", file, file.name);
  // XMLHttpRequest, because fetch reports no upload progress.
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/imports" + query);
  xhr.setRequestHeader("Authorization", "Bearer " + token());
  xhr.setRequestHeader("Idempotency-Key", randomKey());
  resetJob();
  $("job").hidden = false;
  $("start").disabled = true;
  $("job-status").textContent = "Uploading " + file.name + "…";
  xhr.upload.addEventListener("progress", (ev) => {
    if (ev.lengthComputable) $("upload-progress").value = Math.floor((ev.loaded * 100) / ev.total);
  });
  xhr.addEventListener("load", () => {
    $("start").disabled = false;
    let data = null;
    try { data = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
    if (xhr.status === 200 || xhr.status === 201) {
      $("upload-progress").value = 100;
      watch(data);
      refresh();
    } else {
      $("job-status").textContent = "";
      showError("Upload refused: " + ((data && data.message) || ("HTTP " + xhr.status)));
    }
  });
  xhr.addEventListener("error", () => { $("start").disabled = false; showError("Upload failed: the connection broke."); });
  xhr.send(form);
});

function resetJob() {
  if (follow) follow.abort();
  current = null;
  for (const id of ["upload-progress", "import-progress"]) $(id).value = 0;
  for (const id of ["processed", "inserted", "updated", "bad"]) $(id).textContent = "0";
  $("report").hidden = true;
  $("report").removeAttribute("href");
  $("cancel").hidden = true;
}

const FINISHED = ["done", "failed", "cancelled"];

function render(job) {
  current = job;
  $("job-title").textContent = "Import of " + job.file_name;
  $("import-progress").value = Math.floor(job.progress_percent);
  $("processed").textContent = job.processed_rows;
  $("inserted").textContent = job.inserted_rows;
  $("updated").textContent = job.updated_rows;
  $("bad").textContent = job.error_rows;
  let status = job.status + (job.dry_run ? " (dry run)" : "");
  if (job.error) status += ": " + job.error;
  $("job-status").textContent = "Status: " + status;
  $("cancel").hidden = FINISHED.includes(job.status);
}

async function finished(job) {
  render(job);
  refresh();
  if (job.status === "done" && job.errors_report_available) {
    try {
      const link = await api("GET", "/imports/" + job.id + "/errors");
      $("report").href = link.url;
      $("report").hidden = false;
    } catch (err) { showError("No report: " + err.message); }
  }
}

// Live progress: the event stream, read with fetch (EventSource cannot send the token in a
// header); polling when the stream is refused or breaks.
async function watch(job) {
  resetJob();
  $("job").hidden = false;
  $("upload-progress").value = 100;
  render(job);
  if (FINISHED.includes(job.status)) { finished(job); return; }
  const controller = new AbortController();
  follow = controller;
  try {
    const r = await fetch("/imports/" + job.id + "/events", {
      headers: { Authorization: "Bearer " + token(), Accept: "text/event-stream" },
      signal: controller.signal,
    });
    if (r.ok && r.body) {
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let event = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (event === "progress" && data) {
            const snap = JSON.parse(data);
            if (FINISHED.includes(snap.status)) { follow = null; finished(snap); return; }
            render(snap);
          }
        }
      }
    }
  } catch (err) {
    if (controller.signal.aborted) return;
  }
  if (controller.signal.aborted) return;
  for (;;) {
    await new Promise((ok) => setTimeout(ok, 1000));
    if (controller.signal.aborted) return;
    try {
      const snap = await api("GET", "/imports/" + job.id);
      if (FINISHED.includes(snap.status)) { finished(snap); return; }
      render(snap);
    } catch (err) { showError(err.message); return; }
  }
}

$("cancel").addEventListener("click", async () => {
  if (!current) return;
  try { render(await api("POST", "/imports/" + current.id + "/cancel")); } catch (err) { showError("Cancel failed: " + err.message); }
});

async function refresh() {
  if (!token()) return;
  let page;
  try { page = await api("GET", "/imports?limit=20"); } catch (err) { showError(err.message); return; }
  const body = $("jobs");
  body.replaceChildren();
  for (const job of page.items) {
    const tr = document.createElement("tr");
    for (const text of [job.file_name, job.status, job.processed_rows, job.error_rows, new Date(job.created_at).toLocaleString()]) {
      const td = document.createElement("td");
      td.textContent = String(text);
      tr.appendChild(td);
    }
    const td = document.createElement("td");
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = "Show";
    b.setAttribute("aria-label", "Show the import of " + job.file_name + " from " + new Date(job.created_at).toLocaleString());
    b.addEventListener("click", () => watch(job));
    td.appendChild(b);
    tr.appendChild(td);
    body.appendChild(tr);
  }
}
$("refresh").addEventListener("click", refresh);

signedIn();
