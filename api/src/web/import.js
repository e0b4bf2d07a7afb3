// The web page's new import (docs/web.md): the file picked or dropped, its preview with the
// column mapping, the options, the upload. Shares app.js's helpers (classic scripts, one scope).
"use strict";

// ---- picking a file and previewing it ----

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
  preview = f ? { file: f, mapping: [], mapped: false } : null;
  if (f) loadPreview(true);
  else $("preview").hidden = true;
}
$("file").addEventListener("change", chosen);
// Another delimiter or encoding can give other headers: the mapping is proposed again.
for (const id of ["delimiter", "encoding"]) {
  $(id).addEventListener("change", () => {
    if (!preview) return;
    preview.mapped = false;
    loadPreview(false);
  });
}

// The explicit mapping as the API's `columns` option: comma-separated `column:header` pairs.
function encodeColumns(mapping) {
  return mapping.filter((m) => m.column).map((m) => m.column + ":" + m.header).join(",");
}

// The query string of the chosen options: all of them for an upload, only those that change
// how the file is read for a preview.
function optionsQuery(options, forUpload) {
  const q = new URLSearchParams();
  if (forUpload) {
    q.set("mode", options.mode);
    if (options.dryRun) q.set("dry_run", "true");
    if (options.maxErrors) q.set("max_errors", options.maxErrors);
  }
  if (options.delimiter) q.set("delimiter", options.delimiter);
  if (options.encoding) q.set("encoding", options.encoding);
  if (options.columns) q.set("columns", options.columns);
  return "?" + q.toString();
}

function chosenOptions() {
  return {
    mode: $("mode").value, dryRun: $("dry-run").checked, maxErrors: $("max-errors").value.trim(),
    delimiter: $("delimiter").value, encoding: $("encoding").value,
    columns: preview && preview.mapped ? encodeColumns(preview.mapping) : "",
  };
}

let previewSeq = 0; // only the answer to the latest preview request is shown

async function loadPreview(fresh) {
  clearFieldErrors();
  showError("");
  const { file } = preview;
  const seq = ++previewSeq;
  const form = new FormData();
  form.append("file", file.slice(0, PREVIEW_BYTES), file.name);
  $("preview-status").textContent = "Reading the start of " + file.name + "…";
  if (fresh) {
    $("preview-title").textContent = "Preview of " + file.name;
    for (const id of ["mapping", "rows", "p-warnings"]) $(id).replaceChildren();
    for (const id of ["p-delimiter", "p-encoding", "p-compression", "p-header"]) $(id).textContent = "";
    reveal("preview");
  }
  try {
    const p = await request("POST", "/imports/preview" + optionsQuery(chosenOptions(), false), form, true);
    if (seq === previewSeq) showPreview(p);
  } catch (err) {
    if (seq !== previewSeq) return;
    $("preview-status").textContent = "No preview: " + err.message;
    report(err, "No preview", preview.mapped ? "mapping" : "file");
    if (err.code === "missing_email_column" && !preview.mapped) offerHeaders(file, seq);
  }
}

// The service recognised no email column, so it proposed no mapping: the page reads the
// header line itself and lets the user say which cell holds the email.
async function offerHeaders(file, seq) {
  const head = await file.slice(0, 64 * 1024).arrayBuffer();
  let label = $("encoding").value || "utf-8";
  try { new TextDecoder(label); } catch (_) { label = "utf-8"; }
  const line = new TextDecoder(label).decode(head).replace(/^\uFEFF/, "").split(/\r?\n/)[0];
  const chosen = { comma: ",", semicolon: ";", tab: "\t", pipe: "|" }[$("delimiter").value];
  const delimiter = chosen || [",", ";", "\t", "|"].reduce((a, b) => (line.split(b).length > line.split(a).length ? b : a));
  const cells = line.split(delimiter).map((c) => c.trim().replace(/^"(.*)"$/, "$1"));
  if (seq !== previewSeq) return;
  preview.mapping = cells.map((header, position) => ({ header, position, column: null }));
  fill($("mapping"), preview.mapping, mappingRow);
  $("preview-status").textContent = "The service found no email column: choose the header that holds the email.";
}

function showPreview(p) {
  const d = p.dialect || {};
  $("p-delimiter").textContent = delimiterName(d.delimiter || "");
  $("p-encoding").textContent = d.encoding || "";
  $("p-compression").textContent = d.compression || "";
  $("p-header").textContent = d.header === "positional" ? "none (columns by position)" : "a header row";
  fill($("p-warnings"), d.warnings || [], (w) => item("li", w));
  if (!preview.mapped) {
    preview.mapping = p.mapping.map((m) => ({ header: m.header, position: m.position, column: m.column }));
    fill($("mapping"), preview.mapping, mappingRow);
  }
  fill($("rows"), p.rows, (row) => {
    const cells = [String(row.line), ...COLUMNS.map((c) => row.values[c] || "")];
    cells.push(row.valid ? "ok" : row.errors.map((e) => e.code + ": " + e.message).join("; "));
    const tr = rowOf(cells);
    if (!row.valid) tr.className = "bad";
    return tr;
  });
  const bad = p.rows.filter((r) => !r.valid).length;
  $("rows-caption").textContent = "The first " + p.rows.length + " rows as they will be read" +
    (p.truncated ? " (the file goes on)" : "") + ": " + bad + " with problems";
  $("preview-status").textContent = "Read with the delimiter " + delimiterName(d.delimiter || "") + " and the encoding " +
    (d.encoding || "") + "; " + p.mapping.filter((m) => m.column).length + " of " + p.mapping.length + " headers mapped.";
}

function mappingRow(m, i) {
  const tr = document.createElement("tr");
  tr.appendChild(item("td", m.header));
  const td = document.createElement("td");
  const select = document.createElement("select");
  select.id = "map-" + i;
  select.setAttribute("aria-label", "Column for the header " + m.header);
  for (const c of ["", ...COLUMNS]) {
    const o = item("option", c || "(ignore)");
    o.value = c;
    o.selected = (m.column || "") === c;
    select.appendChild(o);
  }
  select.addEventListener("change", () => {
    preview.mapping[i].column = select.value || null;
    preview.mapped = true;
    loadPreview(false);
  });
  td.appendChild(select);
  tr.appendChild(td);
  return tr;
}

// ---- uploading ----

function randomKey() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return "web-" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

$("upload-form").addEventListener("submit", (e) => {
  e.preventDefault();
  clearFieldErrors();
  showError("");
  const file = $("file").files[0];
  if (!file) { fieldError("file", "Choose a file first."); return; }
  if (!$("max-errors").checkValidity()) { fieldError("max-errors", "Enter a whole number of 1 or more, or leave it empty."); return; }
  upload(file, chosenOptions());
});

function upload(file, options) {
  const form = new FormData();
  form.append("file", file, file.name);
  // XMLHttpRequest, because fetch reports no upload progress.
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/imports" + optionsQuery(options, true));
  xhr.setRequestHeader("Authorization", "Bearer " + token());
  xhr.setRequestHeader("Idempotency-Key", randomKey());
  resetJob();
  reveal("job");
  $("start").disabled = true;
  $("job-title").textContent = "Import of " + file.name;
  $("job-status").textContent = "Uploading " + file.name + "…";
  xhr.upload.addEventListener("progress", (ev) => {
    if (ev.lengthComputable) $("upload-progress").value = Math.floor((ev.loaded * 100) / ev.total);
  });
  xhr.addEventListener("load", () => {
    $("start").disabled = false;
    if (xhr.status === 200 || xhr.status === 201) {
      const job = JSON.parse(xhr.responseText);
      lastUpload = { file, options, id: job.id };
      watch(job, false);
      refresh();
    } else {
      $("job-status").textContent = "";
      report(failure(xhr.status, xhr.getResponseHeader("Content-Type"), xhr.responseText), "Upload refused");
    }
  });
  xhr.addEventListener("error", () => { $("start").disabled = false; showError("Upload failed: the connection broke."); });
  xhr.send(form);
}

