#!/usr/bin/env bash
# Hostile clients against a running API (docs/reliability.md, Abuse), each case a few lines of
# Python over plain sockets, with the figures: API RSS before / peak / after (from /proc),
# answers, times. Writes bench/results/abuse.md.
#
#   bench/abuse.sh                                  starts its own release API (below)
#   BASE=http://127.0.0.1:8000 API_PID=1234 bench/abuse.sh
#                                                   against an API already running on this
#                                                   machine (RSS is read from /proc/$API_PID;
#                                                   it must trust 127.0.0.1 as a proxy,
#                                                   TRUSTED_PROXIES=127.0.0.1, for the cases
#                                                   that play several client addresses)
#
# Its own API uses the services of scripts/services.sh (Postgres, Redis, Garage; started unless
# their env, e.g. .local/env, is already exported), a database
# and key prefixes of its own (dropped at the end), the release binaries and the default
# limits, except UPLOAD_IDLE_TIMEOUT_SECONDS=5 (the stall case waits for it) and
# TRUSTED_PROXIES=127.0.0.1. The API cases include 150 stalled 2 MB auth bodies. The fair-share
# cases (16 trickling uploads of 8 accounts and a new user's upload meanwhile; 40 slow replays of
# one key) run against any API. The importer cases (300 rows with a 1,000,000-character field;
# 32 MB of blank lines in windows-1251; a gzip of 5M repeats; 300,000 bad rows; a formula
# after a `;`) run the importer binary on their own and need that database, so they only run
# then (their files are stored in a directory of the run, STORAGE=fs, removed at the end).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
OUT=${OUT:-bench/results/abuse.md}
log() { echo "abuse: $*" >&2; }

work=$(mktemp -d)
api_pid=""
db=""
cleanup() {
  [ -n "$api_pid" ] && kill "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null || true
  [ -n "$db" ] && psql "$admin_url" -X -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${BASE:-}" ]; then
  if [ -z "${DATABASE_URL:-}" ]; then # else: the services' env is already exported
    bash scripts/services.sh >/dev/null
    # shellcheck source=/dev/null
    source .local/env
  fi
  log "building the release binaries"
  cargo build --release -q -p bulk-import-api -p bulk-import-importer
  # Where cargo put them (CARGO_TARGET_DIR is honoured, as cargo does).
  BIN="${CARGO_TARGET_DIR:-$REPO/target}/release"
  run_id=$(date +%s)-$$
  db=bi_abuse_${run_id//-/_}
  admin_url="${DATABASE_URL%/*}/postgres"
  psql "$admin_url" -X -q -c "CREATE DATABASE $db"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  BASE="http://127.0.0.1:$port"
  export APP_ENV=test DATABASE_URL="${DATABASE_URL%/*}/$db" STORAGE_KEY_PREFIX="abuse-$run_id/"
  export REDIS_KEY_PREFIX="abuse-$run_id:" BIND_ADDR="127.0.0.1:$port" RUST_LOG=warn
  export JWT_SECRET="abuse-$run_id-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  export IMPORTER_BIN="$BIN/bulk-import-importer"
  export TRUSTED_PROXIES=127.0.0.1 UPLOAD_IDLE_TIMEOUT_SECONDS=5
  "$BIN/bulk-import-api" >"$work/api.log" 2>&1 &
  api_pid=$!
  API_PID=$api_pid
  for _ in $(seq 1 150); do curl -fs "$BASE/health" >/dev/null && break; sleep 0.2; done
  curl -fs "$BASE/health" >/dev/null || { cat "$work/api.log"; exit 1; }
  OWN_API=1
else
  : "${API_PID:?API_PID: the pid of the API serving BASE}"
  OWN_API=0
fi
IDLE=${UPLOAD_IDLE_TIMEOUT_SECONDS:-30}

log "running the cases against $BASE (pid $API_PID)"
BASE=$BASE API_PID=$API_PID IDLE=$IDLE OWN_API=$OWN_API WORK=$work \
  IMPORTER="${BIN:-$REPO/target/release}/bulk-import-importer" python3 - >"$work/cases.md" <<'PY'
import http.client, json, os, socket, threading, time, uuid, subprocess
from concurrent.futures import ThreadPoolExecutor

BASE = os.environ["BASE"]; PID = int(os.environ["API_PID"]); IDLE = int(os.environ["IDLE"])
HOST, PORT = BASE.split("//")[1].split(":"); PORT = int(PORT)
MIB = 1024 * 1024

def rss(pid=PID):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0

class Sampler:
    def __init__(self):
        self.peak, self.stop = rss(), False
        self.t = threading.Thread(target=self.run, daemon=True); self.t.start()
    def run(self):
        while not self.stop:
            try: self.peak = max(self.peak, rss())
            except FileNotFoundError: return
            time.sleep(0.01)
    def done(self):
        self.stop = True; self.t.join(); return self.peak

def req(method, path, body=None, headers=None, timeout=120):
    c = http.client.HTTPConnection(HOST, PORT, timeout=timeout)
    h = {"Content-Type": "application/json"}; h.update(headers or {})
    c.request(method, path, json.dumps(body) if body is not None else None, h)
    r = c.getresponse(); data = r.read(); c.close()
    return r.status, dict(r.getheaders()), data

def email(tag): return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"
def xff(i): return {"X-Forwarded-For": f"198.51.100.{i % 250 + 1}"}
def counts(statuses): return ", ".join(f"{n} × {s}" for s, n in sorted({s: statuses.count(s) for s in statuses}.items()))
def settle(before, secs=10):
    end = time.time() + secs
    while time.time() < end and rss() > before + 10 * MIB: time.sleep(0.1)
    return rss()
mb = lambda b: f"{b / MIB:.1f} MiB"
rows = []

# 1. 64 parallel registrations, then 64 parallel logins.
warm = email("warm")
req("POST", "/auth/register", {"email": warm, "password": "pass12345"}, xff(0))
req("POST", "/auth/token", {"email": warm, "password": "pass12345"}, xff(0))
before = rss(); s = Sampler(); t0 = time.time()
emails = [email("burst") for _ in range(64)]
with ThreadPoolExecutor(64) as ex:
    regs = list(ex.map(lambda ie: req("POST", "/auth/register", {"email": ie[1], "password": "pass12345"}, xff(ie[0]))[0], enumerate(emails)))
    logins = list(ex.map(lambda ie: req("POST", "/auth/token", {"email": ie[1], "password": "pass12345"}, xff(ie[0]))[0], enumerate(emails)))
took = time.time() - t0; peak = s.done(); after = settle(before)
rows.append(("64 parallel registrations, then 64 parallel logins (distinct addresses)",
             f"registrations: {counts(regs)}; logins: {counts(logins)}; {took:.1f} s",
             f"{mb(before)} / {mb(peak)} / {mb(after)}"))

# 2. 40 parallel wrong logins for one account.
victim = email("victim")
req("POST", "/auth/register", {"email": victim, "password": "pass12345"}, xff(1))
t0 = time.time()
with ThreadPoolExecutor(40) as ex:
    wrong = list(ex.map(lambda i: req("POST", "/auth/token", {"email": victim, "password": f"guess-{i}-x"}, xff(2))[0], range(40)))
rows.append(("40 parallel wrong logins, one account, one address",
             f"{counts(wrong)}; {time.time() - t0:.2f} s", "—"))

# 3. The same address: another user logs in after the 40 failures.
other = email("other")
req("POST", "/auth/register", {"email": other, "password": "pass12345"}, xff(3))
st = req("POST", "/auth/token", {"email": other, "password": "pass12345"}, xff(2))[0]
st_victim = req("POST", "/auth/token", {"email": victim, "password": "pass12345"}, xff(2))[0]
rows.append(("another user at the attacker's address, after those 40",
             f"other user: {st}; the attacked account without its device cookie: {st_victim}", "—"))

token = json.loads(req("POST", "/auth/token", {"email": warm, "password": "pass12345"}, xff(0))[2])["access_token"]

# 4. A chunked multipart preamble of 400 MiB that never reaches its boundary.
before = rss(); s = Sampler(); t0 = time.time()
sock = socket.create_connection((HOST, PORT))
sock.sendall((f"POST /imports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
              "Idempotency-Key: preamble\r\nContent-Type: multipart/form-data; boundary=XYZ\r\n"
              "Transfer-Encoding: chunked\r\n\r\n").encode())
frame = f"{MIB:x}\r\n".encode() + b"a" * MIB + b"\r\n"
sent = [0]
def pump():
    try:
        for _ in range(400):
            sock.sendall(frame); sent[0] += MIB
    except OSError:
        pass
w = threading.Thread(target=pump); w.start()
resp = b""
while b"\r\n\r\n" not in resp:
    chunk = sock.recv(4096)
    if not chunk: break
    resp += chunk
answered = time.time() - t0
w.join(); sock.close(); peak = s.done(); after = settle(before, 3)
status = resp.split(b" ")[1].decode() if resp else "no answer"
rows.append(("chunked `POST /imports`, 400 MiB preamble without a boundary",
             f"{status} after {answered:.2f} s (the client got {sent[0] // MIB} MiB out)",
             f"{mb(before)} / {mb(peak)} / {mb(after)}"))

# 5. Headers and the first boundary line, then nothing.
sock = socket.create_connection((HOST, PORT)); t0 = time.time()
sock.sendall((f"POST /imports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
              "Idempotency-Key: stall\r\nContent-Type: multipart/form-data; boundary=XYZ\r\n"
              "Content-Length: 100000\r\n\r\n--XYZ\r\n").encode())
sock.settimeout(IDLE + 30)
resp = sock.recv(4096); stalled = time.time() - t0; sock.close()
body = (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\r\n"
        b"email,first_name,last_name,phone,city\nok@example.com,,,,\n\r\n--B--\r\n")
c = http.client.HTTPConnection(HOST, PORT, timeout=30)
c.request("POST", "/imports", body, {"Authorization": f"Bearer {token}", "Idempotency-Key": "stall",
          "Content-Type": "multipart/form-data; boundary=B"})
again = c.getresponse().status
rows.append((f"headers + first boundary line, then nothing (UPLOAD_IDLE_TIMEOUT_SECONDS={IDLE})",
             f"{resp.split(b' ')[1].decode() if resp else 'no answer'} after {stalled:.2f} s; the same key at once: {again}", "—"))

# 5b. 150 connections each send 1.9 MB of a declared 2 MB JSON body to POST /auth/token and
# stall (issue 24: 15 → 309 MiB before JSON_BODY_MAX_BYTES); a real login meanwhile. Each plays
# its own address (X-Forwarded-For), so that MAX_CONNECTIONS_PER_ADDR does not refuse them first.
before = rss(); s = Sampler()
prefix = b'{"email":"x@example.com","password":"'
payload = prefix + b"a" * (1_900_000 - len(prefix))
def stall(i):
    sock = socket.create_connection((HOST, PORT))
    try:
        sock.sendall((f"POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"X-Forwarded-For: 203.0.113.{i % 250 + 1}\r\nContent-Length: 2000000\r\n\r\n").encode())
        sock.sendall(payload)
    except OSError:
        pass
    sock.settimeout(30)
    try:
        resp = sock.recv(4096)
    except OSError:
        resp = b""
    return sock, resp.split(b" ")[1].decode() if resp.startswith(b"HTTP/") else "cut"
with ThreadPoolExecutor(150) as ex:
    held = list(ex.map(stall, range(150)))
t0 = time.time()
st = req("POST", "/auth/token", {"email": warm, "password": "pass12345"}, xff(0))[0]
login_took = time.time() - t0
peak = s.done()
for sock, _ in held: sock.close()
after = settle(before, 3)
rows.append(("150 connections each send 1.9 MB of a declared 2 MB JSON body to `POST /auth/token` and stall; a real login meanwhile",
             f"{counts([a for _, a in held])} (cut: reset before the client read its 413); the login: {st} after {login_took:.2f} s",
             f"{mb(before)} / {mb(peak)} / {mb(after)}"))
# 5c. Fair shares (issue 24): 16 trickling uploads from 8 accounts, then a new user's upload;
# 40 parallel slow replays of one key by one user.
def open_upload(tok, key, length):
    s = socket.create_connection((HOST, PORT))
    s.sendall((f"POST /imports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
               f"Idempotency-Key: {key}\r\nContent-Type: multipart/form-data; boundary=XYZ\r\n"
               f"Content-Length: {length}\r\n\r\n--XYZ\r\nContent-Disposition: form-data; "
               "name=\"file\"; filename=\"t.csv\"\r\n\r\n").encode())
    return s

def answer(s):
    resp = b""
    while b"\r\n\r\n" not in resp:
        chunk = s.recv(4096)
        if not chunk: return "closed", ""
        resp += chunk
    head, _, body = resp.partition(b"\r\n\r\n")
    length = int(next((l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")), b"0"))
    while len(body) < length: body += s.recv(4096)
    return head.split(b" ")[1].decode(), json.loads(body or b"{}").get("code", "")

def login(i):
    e = email("fair")
    req("POST", "/auth/register", {"email": e, "password": "pass12345"}, xff(100 + i))
    return json.loads(req("POST", "/auth/token", {"email": e, "password": "pass12345"}, xff(100 + i))[2])["access_token"]

accounts = [login(i) for i in range(8)]
newcomer = login(8)
answers, lock = {}, threading.Lock()
def trickle(idx, tok, key):
    s = open_upload(tok, key, 10_000_000); s.sendall(b"email,first_name,last_name,phone,city\n")
    s.settimeout(1)
    t0 = time.time()
    while True:
        try:
            st = answer(s); break
        except socket.timeout:
            try: s.sendall(b"a@b.c,,,,\n")
            except OSError: st = ("reset", ""); break
    with lock: answers[idx] = (st, time.time() - t0)
    s.close()
threads = [threading.Thread(target=trickle, args=(2 * i + j, tok, f"trickle-{i}-{j}"), daemon=True)
           for i, tok in enumerate(accounts) for j in range(2)]
for t in threads: t.start()
time.sleep(3)
refused_early = sum(1 for st, _ in answers.values() if st[0] == "429")
c = http.client.HTTPConnection(HOST, PORT, timeout=30)
body = (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\r\n"
        b"email,first_name,last_name,phone,city\nnew@example.com,,,,\n\r\n--B--\r\n")
t0 = time.time()
c.request("POST", "/imports", body, {"Authorization": f"Bearer {newcomer}", "Idempotency-Key": "newcomer",
          "Content-Type": "multipart/form-data; boundary=B"})
new_status = c.getresponse().status; new_took = time.time() - t0
for t in threads: t.join(IDLE + 90)
cut = [a for (st, a) in answers.values() if st[0] == "408"]
codes = counts([f"{st[0]} {st[1]}" for st, _ in answers.values()])
c = http.client.HTTPConnection(HOST, PORT, timeout=30)
c.request("POST", "/imports", body, {"Authorization": f"Bearer {accounts[0]}", "Idempotency-Key": "trickle-0-0",
          "Content-Type": "multipart/form-data; boundary=B"})
again = c.getresponse().status
rows.append(("16 uploads from 8 accounts, each sending a few bytes every second; then a new user's upload",
             f"{16 - refused_early} trickles held a slot, {refused_early} × 429 at once; the new user: {new_status} after {new_took:.2f} s; "
             f"the trickles ended: {codes}" + (f", cut after {min(cut):.0f}–{max(cut):.0f} s" if cut else "")
             + f"; a cut trickle's key again: {again}", "—"))

tok = accounts[1]
csv_body = b"email,first_name,last_name,phone,city\n" + b"".join(b"r%d@example.com,F,L,,C\n" % i for i in range(200))
full = (b"--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"t.csv\"\r\n\r\n" + csv_body + b"\r\n--XYZ--\r\n")
c = http.client.HTTPConnection(HOST, PORT, timeout=30)
c.request("POST", "/imports", full, {"Authorization": f"Bearer {tok}", "Idempotency-Key": "replayed",
          "Content-Type": "multipart/form-data; boundary=XYZ"})
first = c.getresponse().status
head_len = full.index(b"\r\n\r\n") + 4
def slow_replay(_):
    s = open_upload(tok, "replayed", len(full)); rest = full[head_len:]
    step = -(-len(rest) // 20)
    def pump():
        for k in range(0, len(rest), step):
            time.sleep(0.1)
            try: s.sendall(rest[k:k + step])
            except OSError: return
    w = threading.Thread(target=pump, daemon=True); w.start()
    s.settimeout(60); st = answer(s); s.close(); return st[0]
t0 = time.time()
with ThreadPoolExecutor(40) as ex:
    replays = list(ex.map(slow_replay, range(40)))
rows.append(("40 parallel slow replays (2 s each) of one key by one user",
             f"first upload {first}; replays: {counts(replays)}; {time.time() - t0:.1f} s", "—"))

# 6. The importer: 300 rows with a 1,000,000-character field.
if os.environ["OWN_API"] == "1":
    path = os.path.join(os.environ["WORK"], "hostile.csv")
    with open(path, "w") as f:
        f.write("email,first_name,last_name,phone,city\n")
        big = "y" * 1_000_000
        for i in range(300): f.write(f"bad{i}@example.com,{big},L,,\n")
        f.write("good@example.com,Good,,,\n")
    imp = os.environ["IMPORTER"]
    # The 300 MB upload goes to a directory of the run (removed at the end), not the bucket.
    env = dict(os.environ, STORAGE="fs", STORAGE_DIR=os.path.join(os.environ["WORK"], "storage"))
    job = subprocess.run([imp, "submit", "--file", path, "--mode", "insert_only"], check=True,
                         capture_output=True, text=True, env=env).stdout.strip()
    os.remove(path)
    t0 = time.time()
    p = subprocess.Popen([imp, "--job-id", job], env=env)
    _, status, usage = os.wait4(p.pid, 0)
    rows.append(("importer: 300 rows with a 1,000,000-character field (300 MB file)",
                 f"exit {os.waitstatus_to_exitcode(status)} after {time.time() - t0:.1f} s",
                 f"peak {usage.ru_maxrss / 1024:.1f} MiB (ru_maxrss)"))

# 7–10. The importer bounded by construction (issue 24), each file run by the importer binary on
# its own; its peak RSS is its VmHWM, read from /proc while it runs (ru_maxrss would count this
# Python process, which the child was forked from).
if os.environ["OWN_API"] == "1":
    import csv, gzip as gz, io
    imp = os.environ["IMPORTER"]
    storage = os.path.join(os.environ["WORK"], "storage")
    env = dict(os.environ, STORAGE="fs", STORAGE_DIR=storage)
    header = b"email,first_name,last_name,phone,city\n"

    def write(name, data):
        path = os.path.join(os.environ["WORK"], name)
        with open(path, "wb") as f: f.write(data)
        return path

    def run_importer(path, *args):
        job = subprocess.run([imp, "submit", "--file", path, "--mode", "insert_only", *args],
                             check=True, capture_output=True, text=True, env=env).stdout.strip()
        os.remove(path)
        t0 = time.time(); p = subprocess.Popen([imp, "--job-id", job], env=env); peak = 0
        while p.poll() is None:
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    peak = max([peak] + [int(l.split()[1]) for l in f if l.startswith("VmHWM:")])
            except (FileNotFoundError, ProcessLookupError):
                pass
            time.sleep(0.005)
        took = time.time() - t0
        row = subprocess.run(["psql", os.environ["DATABASE_URL"], "-XAt", "-F", " ", "-c",
                              "SELECT status, coalesce(error_code, '-'), processed_rows, inserted_rows, error_rows, "
                              f"(SELECT count(*) FROM import_errors WHERE job_id = '{job}') FROM import_jobs WHERE id = '{job}'"],
                             check=True, capture_output=True, text=True).stdout.split()
        status, error, processed, inserted, errors, stored = row
        what = f"exit {p.returncode} after {took:.1f} s: {status}" + (f" `{error}`" if error != "-" else "")
        what += f"; processed {int(processed):,}, inserted {int(inserted):,}, bad {int(errors):,}, stored {int(stored):,}"
        return job, what, f"peak {peak / 1024:.1f} MiB (VmHWM)"

    def report(job, name):
        path = os.path.join(storage, os.environ["STORAGE_KEY_PREFIX"], "reports", job, name)
        with open(path, newline="") as f: return f.read()

    # 7. 32 MB of blank lines, one row at the end, read as windows-1251.
    path = write("blank.csv", header + b"\n" * 32_000_000 + "last@example.com,Ёж,,,\n".encode("cp1251"))
    _, what, peak = run_importer(path, "--encoding", "windows-1251")
    rows.append(("importer: 32 MB of blank lines, one row at the end, `encoding=windows-1251`", what, peak))

    # 8. A gzip of five million copies of one row: 100 concatenated members of 50,000 rows.
    line = b"same@example.com,,,,\n"
    data = gz.compress(header + line * 50_000, 9) + gz.compress(line * 50_000, 9) * 99
    path = write("repeats.csv.gz", data)
    _, what, peak = run_importer(path)
    rows.append((f"importer: gzip of 5,000,000 copies of one row ({len(data) / 1024:.0f} KiB)", what, peak))

    # 9. 300,000 bad rows, plain: counted on past the stored cap; errors.csv says how many.
    path = write("bad.csv", header + b"".join(b"bad-%d,B,,,\n" % i for i in range(300_000)))
    job, what, peak = run_importer(path)
    last = list(csv.reader(io.StringIO(report(job, "errors.csv"))))[-1]
    rows.append(("importer: 300,000 bad rows (plain, 4 MB)", f"{what}; errors.csv ends `{last[1]}`: {last[2]}", peak))

    # 10. A formula after a `;` in a bad row, both files read as a `;` spreadsheet reads them.
    path = write("formula.csv", header + b"bad-1,x;=cmd|' /C calc'!A0,L,+47 22 33 44 55,\nok@example.com,Ok,,,\n")
    job, _, _ = run_importer(path)
    found = []
    for name in ["errors.csv", "rows.csv"]:
        cells = [c for r in csv.reader(io.StringIO(report(job, name)), delimiter=";") for c in r]
        runs = [c for c in cells if c.lstrip(' "')[:1] in ("=", "@")]
        found.append(f"{name}: {len(runs)} of {len(cells)} cells start a formula")
    rows.append(("importer: a bad row with `x;=cmd\\|' /C calc'!A0`, both report files read with `;` as the separator",
                 "; ".join(found), "—"))

print("| case | answers, times | API RSS before / peak / after |")
print("|---|---|---|")
for r in rows: print("| " + " | ".join(r) + " |")
PY

mkdir -p "$(dirname "$OUT")"
{
  echo "# Abuse run ($(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD))"
  echo
  echo "\`bench/abuse.sh\` on loopback, $(nproc) cores, release build, default limits"
  echo "(UPLOAD_IDLE_TIMEOUT_SECONDS=$IDLE, TRUSTED_PROXIES=127.0.0.1 so that one client plays"
  echo "several addresses with X-Forwarded-For). Bounds promised (docs/reliability.md, Abuse): API"
  echo "RSS under 150 MiB through the hashing bursts and back afterwards; the preamble answered"
  echo "400/413 with RSS + < 20 MiB; the stall answered 408 within the idle timeout + 5 s; at"
  echo "most 5 of the 40 wrong logins checked (401); the other user at the address logs in;"
  echo "the importer under 64 MiB. Issue 24: the importer under 64 MiB on 32 MB of blank lines and"
  echo "on a gzip of 5M repeats, which fails \`file_too_large\` (MAX_DECOMPRESSION_RATIO=100); at"
  echo "most MAX_STORED_ERROR_ROWS=100000 error rows stored per job; no cell of either report file"
  echo "starts a formula when read with \`;\` as the separator. The API under 100 MiB through"
  echo "150 stalled 2 MB auth bodies (JSON_BODY_MAX_BYTES=8192), a login answered meanwhile. Fair shares: a new user's upload"
  echo "answered while 16 trickling uploads of 8 accounts are open (at most 14 hold a slot: 4 of"
  echo "16 reserved for organizations holding none), the trickles cut 408 \`upload_too_slow\` after"
  echo "UPLOAD_RATE_WINDOW_SECONDS (30) and their keys free; of 40 slow replays of one key, all but"
  echo "the user's 2 upload slots answered 429."
  echo
  cat "$work/cases.md"
} >"$OUT"
cat "$OUT"
