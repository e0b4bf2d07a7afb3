// The web page's view of one import (docs/web.md): live progress, cancel / retry / delete,
// "import for real" after a dry run, the report links and the bad rows page by page.
"use strict";

// ---- one job: progress, actions, bad rows ----

function resetJob() {
  if (follow) follow.abort();
  current = null;
  for (const id of ["upload-progress", "import-progress"]) $(id).value = 0;
  for (const id of ["processed", "inserted", "updated", "bad"]) $(id).textContent = "0";
  for (const id of ["report", "rows-file"]) { $(id).hidden = true; $(id).removeAttribute("href"); }
  for (const id of ["cancel", "retry", "delete", "real", "bad-rows"]) $(id).hidden = true;
  $("job-dialect").textContent = "";
}

function render(job) {
  current = job;
  $("job-title").textContent = "Import of " + job.file_name;
  $("import-progress").value = Math.floor(job.progress_percent);
  $("processed").textContent = job.processed_rows;
  $("inserted").textContent = job.inserted_rows;
  $("updated").textContent = job.updated_rows;
  $("bad").textContent = job.error_rows;
  let status = job.status + (job.queue_position ? " (position " + job.queue_position + " in the queue for an importer)" : "") +
    (job.dry_run ? " (dry run)" : "");
  if (job.error) status += ": " + job.error;
  $("job-status").textContent = "Status: " + status;
  const d = job.dialect;
  $("job-dialect").textContent = d ? "Read with the delimiter " + delimiterName(d.delimiter) + " and the encoding " + d.encoding +
    "; columns: " + d.columns.map((c) => c.column + " ← " + c.header).join(", ") + "." : "";
  const over = FINISHED.includes(job.status);
  $("cancel").hidden = over;
  $("retry").hidden = job.status !== "failed";
  $("delete").hidden = !over;
  $("real").hidden = !(job.status === "done" && job.dry_run && lastUpload && lastUpload.id === job.id);
}

async function finished(job) {
  render(job);
  refresh();
  if (job.error_rows > 0) badRows(job, [null]);
  if (!job.errors_report_available) return;
  for (const [id, format] of [["report", ""], ["rows-file", "?format=rows"]]) {
    try {
      const link = await api("GET", "/imports/" + job.id + "/errors" + format);
      if (current && current.id !== job.id) return;
      $(id).href = link.url;
      $(id).hidden = false;
    } catch (err) { if (err.code !== "no_rows_report") showError("No report: " + err.message); }
  }
}

// One page of the job's bad rows; `afters` is the stack of keyset cursors of the pages so far.
async function badRows(job, afters) {
  const after = afters[afters.length - 1];
  let page;
  try {
    page = await api("GET", "/imports/" + job.id + "/errors?format=json&limit=" + BAD_PAGE + (after === null ? "" : "&after=" + after));
  } catch (err) { showError("No bad rows: " + err.message); return; }
  if (!current || current.id !== job.id) return;
  fill($("bad-body"), page.items, (r) => rowOf([String(r.line), r.code + ": " + r.message, ...COLUMNS.map((c) => r.values[c] || "")]));
  const first = (afters.length - 1) * BAD_PAGE + 1;
  $("bad-caption").textContent = "Bad rows " + first + "–" + (first + page.items.length - 1) + " of " + page.error_rows;
  $("bad-prev").disabled = afters.length < 2;
  $("bad-next").disabled = page.next_after === null;
  $("bad-prev").onclick = () => badRows(job, afters.slice(0, -1));
  $("bad-next").onclick = () => badRows(job, [...afters, page.next_after]);
  $("bad-rows").hidden = false;
  keepFocus("bad-rows-title");
}

// Live progress: the event stream, read with fetch (EventSource cannot send the token in a
// header); polling when the stream is refused or breaks.
async function watch(job, focus = true) {
  resetJob();
  if (focus) reveal("job");
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
          const snap = progressEvent(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (!snap) continue;
          if (FINISHED.includes(snap.status)) { follow = null; finished(snap); return; }
          render(snap);
        }
      }
    }
  } catch (err) {
    if (controller.signal.aborted) return;
  }
  while (!controller.signal.aborted) {
    await new Promise((ok) => setTimeout(ok, 1000));
    if (controller.signal.aborted) return;
    try {
      const snap = await api("GET", "/imports/" + job.id);
      if (FINISHED.includes(snap.status)) { finished(snap); return; }
      render(snap);
    } catch (err) { showError(err.message); return; }
  }
}

// The job of an SSE `progress` event block, or null.
function progressEvent(block) {
  let event = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  return event === "progress" && data ? JSON.parse(data) : null;
}

// A job action: POST cancel / retry or DELETE; the answer is shown.
async function act(label, method, suffix) {
  if (!current) return;
  showError("");
  const job = current;
  try {
    const answer = await api(method, "/imports/" + job.id + suffix);
    if (method === "DELETE") {
      resetJob();
      $("job").hidden = true;
      notice("Deleted the import of " + job.file_name + ".");
      $("history-title").focus();
      refresh();
    } else if (answer.status === "pending") {
      notice("The import of " + job.file_name + " runs again.");
      watch(answer);
    } else render(answer);
  } catch (err) { showError(label + " failed: " + err.message); }
}
$("cancel").addEventListener("click", () => act("Cancel", "POST", "/cancel"));
$("retry").addEventListener("click", () => act("Retry", "POST", "/retry"));
$("delete").addEventListener("click", () => act("Delete", "DELETE", ""));
$("real").addEventListener("click", () => {
  if (lastUpload) upload(lastUpload.file, Object.assign({}, lastUpload.options, { dryRun: false }));
});

