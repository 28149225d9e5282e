#!/usr/bin/env bash
# tests/deploy/monitoring.sh — checks deploy/monitoring/ (alert rules and their unit tests, the
# Grafana dashboard, the example Prometheus configuration), statically and against the lab:
#   1. `promtool check rules`, `promtool test rules`, `promtool check config`;
#   2. the dashboard is JSON and every panel has a query;
#   3. rbd-mirror-rs is started at the lab's site-b (as `lab.sh mirror-start` starts it), a
#      journal-mirrored and a snapshot-mirrored image are created at site-a and replicated:
#      every metric name used by the dashboard's queries and by the alert rules must then be
#      exported on the daemon's /metrics (the missing ones are listed);
#   4. a real Prometheus (loopback, a free port, its own temporary storage, 1 s scrape and
#      rule intervals) scrapes that daemon: the target must be up, every rule loaded and
#      evaluated without error, alerts that must be quiet inactive; then the daemon is
#      stopped and CephRBDMirrorDaemonDown must become active (pending: its `for` is 1m).
#
# tests/run.sh runs it after the integration tests, while the lab is up. By hand:
#   tests/lab/lab.sh up && tests/deploy/monitoring.sh
# Environment: RBD_MIRROR_LAB_INSTANCE / RBD_MIRROR_LAB_DIR, as for tests/lab/lab.sh (default:
#   instance 0); RBD_MIRROR_RS_BIN, the daemon (default: the newer of
#   target/release/rbd-mirror-rs and target/debug/rbd-mirror-rs); MONITORING_RULES and
#   MONITORING_DASHBOARD check other files than deploy/monitoring's.
# Leaves the lab as it found it: its images are removed, a site-b rbd-mirror that was running
# is started again, Prometheus is stopped and its directory deleted. Every missing piece is a
# failure with a message; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
T0=$SECONDS

RULES=${MONITORING_RULES:-deploy/monitoring/rbd-mirror-rs.rules.yml}
RULE_TESTS=deploy/monitoring/tests/rbd-mirror-rs.rules.test.yml
DASHBOARD=${MONITORING_DASHBOARD:-deploy/monitoring/grafana/rbd-mirror-rs.json}
PROM_CONFIG=deploy/monitoring/prometheus.yml
JOB=rbd-mirror                  # the scrape job the rules expect (up{job="rbd-mirror"})
POOL=mirror
LAB_SH=$ROOT/tests/lab/lab.sh
TIMEOUT=${RBD_MIRROR_LAB_TIMEOUT:-90}

log() { printf 'monitoring.sh: %s\n' "$*" >&2; }
step() { printf '\n== monitoring.sh: %s (%ds)\n' "$*" "$((SECONDS - T0))" >&2; }
fail() {
  printf '\nmonitoring.sh: FAILED: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------- prerequisites
as_root() { if ((EUID == 0)); then "$@"; elif sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi; }
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  log "installing Debian's prometheus package (prometheus, promtool)"
  as_root apt-get install -y --no-install-recommends prometheus >/dev/null ||
    { as_root apt-get update >/dev/null && as_root apt-get install -y --no-install-recommends prometheus >/dev/null; } ||
    fail "cannot install the prometheus package (needs root or password-less sudo): apt-get install prometheus"
fi
for tool in promtool prometheus jq curl python3 ceph rbd timeout; do
  command -v "$tool" >/dev/null || fail "$tool not found (deploy/install-deps.sh installs what the lab needs)"
done
python3 -c 'import yaml' 2>/dev/null || fail "python3-yaml is missing: apt-get install python3-yaml"
for f in "$RULES" "$RULE_TESTS" "$DASHBOARD" "$PROM_CONFIG"; do [[ -f $f ]] || fail "$f does not exist"; done

# ---------------------------------------------------------------- state, cleanup
JIMG=monitoring-journal-$$
SIMG=monitoring-snapshot-$$
IMAGES=()           # created at site-a, removed by cleanup
PREV_EXE=""         # the site-b rbd-mirror running before, restarted by cleanup
OURS=0              # our daemon started here
PROM_PID=""
LAB=""
WORK=$(mktemp -d /tmp/rbd-mirror-rs-monitoring.XXXXXX)   # removed by cleanup
SCRAPE=$WORK/metrics.txt

cleanup() {
  local rc=$? img
  set +e
  if [[ -n $PROM_PID ]]; then
    kill "$PROM_PID" 2>/dev/null && wait "$PROM_PID" 2>/dev/null
    if ((rc != 0)) && [[ -s $WORK/prometheus.log ]]; then
      log "Prometheus log (last lines):"; tail -n 20 "$WORK/prometheus.log" >&2
    fi
  fi
  if ((OURS)); then "$LAB_SH" mirror-stop site-b; fi
  for img in "${IMAGES[@]}"; do   # our daemon is stopped: nothing races with the removals
    "${A[@]}" mirror image disable "$POOL/$img" >/dev/null 2>&1
    "${A[@]}" rm --no-progress "$POOL/$img" >/dev/null 2>&1 || log "WARNING: could not remove $POOL/$img at site-a"
    if "${B[@]}" info "$POOL/$img" >/dev/null 2>&1; then
      "${B[@]}" mirror image disable --force "$POOL/$img" >/dev/null 2>&1
      "${B[@]}" snap purge --no-progress "$POOL/$img" >/dev/null 2>&1
      "${B[@]}" rm --no-progress "$POOL/$img" >/dev/null 2>&1 || log "WARNING: could not remove $POOL/$img at site-b"
    fi
  done
  if [[ -n $PREV_EXE ]]; then
    log "starting again the site-b rbd-mirror that ran before ($PREV_EXE)"
    if [[ $(basename "$PREV_EXE") == rbd-mirror ]]; then
      env -u RBD_MIRROR_LAB_MIRROR_BIN -u CEPH_LAB_MIRROR_BIN "$LAB_SH" mirror-start site-b
    else
      RBD_MIRROR_LAB_MIRROR_BIN=$PREV_EXE "$LAB_SH" mirror-start site-b
    fi || log "WARNING: could not restart $PREV_EXE at site-b"
  fi
  rm -rf "$WORK"
  if ((rc == 0)); then log "PASSED in $((SECONDS - T0))s"
  else log "FAILED (exit $rc) after $((SECONDS - T0))s${LAB:+; daemon logs: $LAB/site-b/log/}"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- 1. promtool
step "promtool check rules $RULES"
promtool check rules "$RULES" || fail "promtool check rules $RULES"
step "promtool test rules $RULE_TESTS (on $RULES)"
# The tests name their rules as ../rbd-mirror-rs.rules.yml: run them on a copy of that layout.
mkdir -p "$WORK/unit/tests" && cp "$RULES" "$WORK/unit/rbd-mirror-rs.rules.yml" && cp "$RULE_TESTS" "$WORK/unit/tests/"
(cd "$WORK/unit/tests" && promtool test rules "$(basename "$RULE_TESTS")") || fail "promtool test rules $RULE_TESTS"
step "promtool check config $PROM_CONFIG"
promtool check config "$PROM_CONFIG" || fail "promtool check config $PROM_CONFIG"
grep -Eq "^\s*-\s*job_name:\s*['\"]?${JOB}['\"]?\s*$" "$PROM_CONFIG" ||
  fail "$PROM_CONFIG has no scrape job named '$JOB', which the alert rules expect"

# ---------------------------------------------------------------- 2. dashboard, metric names
# Prints the metric names the dashboard's queries (panels and template variables) and the
# rules' expressions use, one per line, and writes the dashboard's queries to
# $WORK/dashboard-queries.json; fails on a malformed dashboard.
used_metrics() {
  python3 - "$DASHBOARD" "$RULES" "$WORK/dashboard-queries.json" <<'PY'
import json, re, sys
import yaml

dashboard_path, rules_path, queries_path = sys.argv[1], sys.argv[2], sys.argv[3]
errors = []
try:
    dash = json.load(open(dashboard_path))
except ValueError as e:
    sys.exit(f"{dashboard_path} is not valid JSON: {e}")
if not isinstance(dash, dict) or not isinstance(dash.get("panels"), list) or not dash["panels"]:
    sys.exit(f"{dashboard_path}: no panels")
exprs = []  # (where, expression)
ids = set()

def walk(panels):
    for p in panels:
        if p.get("id") in ids:
            errors.append(f"panel id {p.get('id')} used twice")
        ids.add(p.get("id"))
        if p.get("type") == "row":
            walk(p.get("panels", []))
            continue
        targets = p.get("targets") or []
        if not targets:
            errors.append(f"panel '{p.get('title')}' has no query")
        for t in targets:
            if not (t.get("expr") or "").strip():
                errors.append(f"panel '{p.get('title')}' target {t.get('refId')} has an empty expr")
            else:
                exprs.append((f"panel '{p.get('title')}'", t["expr"]))

walk(dash["panels"])
for v in dash.get("templating", {}).get("list", []):
    if v.get("type") == "query":
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        if not q.strip():
            errors.append(f"variable '{v.get('name')}' has no query")
        exprs.append((f"variable '{v.get('name')}'", q))
json.dump(exprs, open(queries_path, "w"))
rules = yaml.safe_load(open(rules_path))
for g in rules.get("groups", []):
    for r in g.get("rules", []):
        exprs.append((f"rule {r.get('alert') or r.get('record')}", str(r["expr"])))
if errors:
    sys.exit(f"{dashboard_path}: " + "; ".join(errors))

KEYWORDS = {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left",
            "group_right", "offset", "inf", "nan", "atan2", "start", "end"}

def names(expr):
    s = re.sub(r'label_values\(\s*([^,()]*(?:\{[^}]*\})?)\s*,\s*\w+\s*\)', r' \1 ', expr)
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', ' ', s)  # strings
    s = re.sub(r'\{[^}]*\}', ' ', s)                                        # label matchers
    s = re.sub(r'\[[^\]]*\]', ' ', s)                                       # ranges, [[var]]
    s = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)', ' ', s)
    s = re.sub(r'\boffset\s+-?\w+', ' ', s)
    s = re.sub(r'@\s*\S+', ' ', s)
    s = re.sub(r'\$\{?\w+\}?', ' ', s)                                      # Grafana variables
    found = set()
    for m in re.finditer(r'(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?', s):
        if m.group(2) or m.group(1) in KEYWORDS:
            continue
        found.add(m.group(1))
    return found

out = set()
for where, e in exprs:
    n = names(e)
    if not n:
        sys.exit(f"{where}: no metric name found in: {e}")
    out |= n
print("\n".join(sorted(out)))
PY
}

step "dashboard $DASHBOARD"
jq -e 'type == "object" and (.panels | length > 0)' "$DASHBOARD" >/dev/null || fail "$DASHBOARD is not a JSON dashboard with panels"
USED=$(used_metrics) || fail "$DASHBOARD / $RULES: see above"
# Series Prometheus itself writes, not the daemon: checked against the live Prometheus below.
PROMETHEUS_SERIES='^(up|ALERTS|ALERTS_FOR_STATE|scrape_[a-z_]+)$'
log "metric names used by the dashboard and the rules: $(tr '\n' ' ' <<<"$USED")"

# ---------------------------------------------------------------- 3. the lab and our daemon
LAB=$("$LAB_SH" dir)
step "lab $LAB (instance ${RBD_MIRROR_LAB_INSTANCE:-0})"
CONF_A=$LAB/site-a/site-a.conf
CONF_B=$LAB/site-b/site-b.conf
for s in site-a site-b; do
  conf=$LAB/$s/$s.conf
  [[ -f $conf ]] || fail "the lab is not running ($conf missing): start it with tests/lab/lab.sh up (same RBD_MIRROR_LAB_INSTANCE / RBD_MIRROR_LAB_DIR)"
  timeout 30 ceph --cluster "$s" -c "$conf" --connect-timeout 15 fsid >/dev/null 2>&1 ||
    fail "the lab's $s does not answer (ceph fsid): start it with tests/lab/lab.sh up"
done
# Where lab.sh makes our daemon serve /metrics: site-b's address, port <mon port prefix>287.
MON_V2=$(sed -n 's/^[[:space:]]*mon host = \[v2:\([0-9.]*:[0-9]*\),.*/\1/p' "$CONF_B" | head -1)
[[ $MON_V2 =~ ^([0-9.]+):([0-9]+)$ ]] || fail "cannot read site-b's monitor address from $CONF_B"
METRICS_ADDR=${BASH_REMATCH[1]}:$((BASH_REMATCH[2] / 1000 * 1000 + 287))
METRICS_URL=http://$METRICS_ADDR/metrics

BIN=${RBD_MIRROR_RS_BIN:-}
if [[ -z $BIN ]]; then
  for candidate in target/release/rbd-mirror-rs target/debug/rbd-mirror-rs; do
    [[ -x $candidate && (-z $BIN || $candidate -nt $BIN) ]] && BIN=$candidate
  done
fi
[[ -n $BIN && -x $BIN ]] || fail "no rbd-mirror-rs binary: build it (cargo build --release -p daemon) or set RBD_MIRROR_RS_BIN"
BIN=$(readlink -f "$BIN")

A=(timeout "$TIMEOUT" rbd --cluster site-a -c "$CONF_A")
B=(timeout "$TIMEOUT" rbd --cluster site-b -c "$CONF_B")

scrape() { curl -sf --max-time 5 "$METRICS_URL" >"$SCRAPE"; }
# metric NAME LABELS: the value of the first sample of NAME whose labels contain LABELS.
metric() {
  awk -v n="$1" -v l="$2" '!/^#/ { split($0, a, /[{ ]/); if (a[1] == n && index($0, l)) { print $NF; exit } }' "$SCRAPE"
}
wait_for() {  # wait_for WHAT CMD...: retry once a second, bounded
  local what=$1 end=$((SECONDS + TIMEOUT)); shift
  until "$@"; do
    ((SECONDS < end)) || fail "gave up after ${TIMEOUT}s waiting for $what"
    sleep 1
  done
}

step "rbd-mirror-rs at site-b ($BIN), /metrics on $METRICS_ADDR"
pidfile=$LAB/site-b/run/rbd-mirror.b.pid
if [[ -s $pidfile ]]; then
  read -r pid exe <"$pidfile" || true
  if [[ -n ${pid:-} && -d /proc/$pid && $(readlink "/proc/$pid/exe" 2>/dev/null) =~ ^"$exe"( \(deleted\))?$ ]]; then
    PREV_EXE=$exe
    log "a site-b rbd-mirror is running ($exe): stopping it for this test, it is started again afterwards"
    "$LAB_SH" mirror-stop site-b
  fi
fi
env -u RBD_MIRROR_LAB_METRICS_DEFAULT RBD_MIRROR_LAB_MIRROR_BIN="$BIN" "$LAB_SH" mirror-start site-b
OURS=1
wait_for "$METRICS_URL to answer" scrape

step "a journal-mirrored and a snapshot-mirrored image at site-a"
"${A[@]}" create "$POOL/$JIMG" --size 64M --image-feature layering,exclusive-lock,journaling
IMAGES+=("$JIMG")
"${A[@]}" mirror image enable "$POOL/$JIMG" journal >/dev/null
"${A[@]}" create "$POOL/$SIMG" --size 64M --image-feature layering,exclusive-lock
IMAGES+=("$SIMG")
"${A[@]}" mirror image enable "$POOL/$SIMG" snapshot >/dev/null

replaying() {
  scrape || return 1
  local j="image=\"$JIMG\"" s="image=\"$SIMG\""
  [[ $(metric rbd_mirror_rs_image_state "$j,state=\"replaying\"") == 1 &&
     $(metric rbd_mirror_rs_image_state "$s,state=\"replaying\"") == 1 &&
     -n $(metric rbd_mirror_rs_image_lag_seconds "$j") && -n $(metric rbd_mirror_rs_image_lag_seconds "$s") ]]
}
# Written once both replay: writes made before the journal image's initial sync are copied
# by that sync, not replayed, and the replay counters would stay at 0.
wait_for "both images replaying at site-b" replaying
"${A[@]}" bench --io-type write --io-size 4K --io-total 256K "$POOL/$JIMG" >/dev/null
"${A[@]}" bench --io-type write --io-size 64K --io-total 1M "$POOL/$SIMG" >/dev/null
"${A[@]}" mirror image snapshot "$POOL/$SIMG" >/dev/null

replicated() {
  replaying || return 1
  local j="image=\"$JIMG\"" s="image=\"$SIMG\""
  awk -v v="$(metric ceph_rbd_mirror_image_replay_bytes "$j")" -v n="$(metric ceph_rbd_mirror_snapshot_image_snapshots "$s")" \
    'BEGIN { exit !(v > 0 && n >= 2) }'
}
wait_for "the journal's writes replayed and a second mirror snapshot synced at site-b" replicated

step "every metric name used is exported on $METRICS_URL"
EXPORTED=$(grep -v '^#' "$SCRAPE" | sed -n 's/^\([a-zA-Z_:][a-zA-Z0-9_:]*\).*/\1/p' | sort -u)
MISSING=$(comm -23 <(grep -Ev "$PROMETHEUS_SERIES" <<<"$USED" | sort -u) <(sort -u <<<"$EXPORTED"))
[[ -z $MISSING ]] || fail "metric names used in $DASHBOARD or $RULES but not exported by rbd-mirror-rs:
  ${MISSING//$'\n'/$'\n'  }"
log "all $(grep -Evc "$PROMETHEUS_SERIES" <<<"$USED") exported; from Prometheus itself: $(grep -E "$PROMETHEUS_SERIES" <<<"$USED" | tr '\n' ' ')"

# ---------------------------------------------------------------- 4. a real Prometheus
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
API=http://127.0.0.1:$PORT/api/v1
step "Prometheus on 127.0.0.1:$PORT scraping $METRICS_ADDR every second ($WORK)"
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/$RULES
scrape_configs:
  - job_name: $JOB
    static_configs:
      - targets: ['$METRICS_ADDR']
EOF
promtool check config "$WORK/prometheus.yml" >/dev/null || fail "the generated $WORK/prometheus.yml is invalid"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
  --web.listen-address="127.0.0.1:$PORT" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
ready() {
  kill -0 "$PROM_PID" 2>/dev/null || fail "Prometheus exited: $(tail -n 5 "$WORK/prometheus.log")"
  curl -sf --max-time 2 "http://127.0.0.1:$PORT/-/ready" >/dev/null
}
wait_for "Prometheus to be ready" ready

api() { curl -sf --max-time 5 "$API/$1"; }
target_up() {
  api targets | jq -e --arg job "$JOB" --arg addr "$METRICS_ADDR" \
    '[.data.activeTargets[] | select(.labels.job == $job and .labels.instance == $addr and .health == "up")] | length == 1' >/dev/null
}
wait_for "the target $METRICS_ADDR (job $JOB) to be up" target_up
log "target $METRICS_ADDR is up"

RULE_COUNT=$(python3 -c 'import sys, yaml; print(sum(len(g["rules"]) for g in yaml.safe_load(open(sys.argv[1]))["groups"]))' "$RULES")
GROUPS_JSON=$WORK/rules.json
# state ALERT: the state of alerting rule ALERT (inactive, pending, firing)
state() { jq -r --arg a "$1" '[.data.groups[].rules[] | select(.name == $a) | .state] | first // "missing"' "$GROUPS_JSON"; }
evaluated() {
  api rules >"$GROUPS_JSON" || return 1
  # every rule loaded, evaluated and healthy; our images' series in Prometheus; the
  # daemon-down alert, pending before the first scrape (no up series), inactive again
  jq -e --argjson n "$RULE_COUNT" \
    '[.data.groups[].rules[]] | length == $n and all(.health == "ok" and .lastEvaluation != "0001-01-01T00:00:00Z")' \
    "$GROUPS_JSON" >/dev/null &&
    [[ $(state CephRBDMirrorDaemonDown) == inactive ]] &&
    api "query?query=count(rbd_mirror_rs_image_state%7Bimage%3D~%22$JIMG%7C$SIMG%22%2Cstate%3D%22replaying%22%7D)" |
    jq -e '.data.result[0].value[1] == "2"' >/dev/null
}
step "the $RULE_COUNT rules of $RULES loaded and evaluated on the daemon's series"
wait_for "every rule evaluated without error, CephRBDMirrorDaemonDown inactive, our images' series queryable" evaluated
jq -r '.data.groups[] | .name as $g | .rules[] | "  \($g)/\(.name): \(.state) (health \(.health), last evaluation \(.lastEvaluation))"' "$GROUPS_JSON" >&2
for quiet in CephRBDMirrorDaemonDown CephRBDMirrorImagesPerDaemonHigh; do
  [[ $(state "$quiet") == inactive ]] || fail "$quiet is $(state "$quiet") while the daemon is up with a few images; expected inactive"
done
# Other images of the lab's pool may be in any state; ours replay and are caught up.
ours=$(api alerts | jq -r --arg j "$JIMG" --arg s "$SIMG" \
  '.data.alerts[] | select(.labels.image == $j or .labels.image == $s) | "\(.labels.alertname) \(.labels.image) \(.state)"')
[[ -z $ours ]] || fail "alerts active for this test's replaying, caught-up images: $ours"

step "every dashboard query runs on this Prometheus"
# Grafana's variables as "All" (.*), its intervals as 1m; a template variable's
# label_values(SELECTOR, LABEL) as SELECTOR. Each must run without error, and the variables
# must find our pool and images.
python3 - "$WORK/dashboard-queries.json" "$API" "$POOL" "$JIMG" "$SIMG" <<'PY' || fail "dashboard queries: see above"
import json, re, sys, urllib.error, urllib.parse, urllib.request

queries, api, pool, images = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4:]
bad = []
for where, expr in queries:
    q = re.sub(r"\$__(rate_interval|interval|range)\b", "1m", expr)
    q = re.sub(r"\$\{?\w+\}?", ".*", q)
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q, re.S)
    if m:
        q = m.group(1)
    try:
        with urllib.request.urlopen(f"{api}/query?" + urllib.parse.urlencode({"query": q}), timeout=10) as r:
            result = json.load(r)["data"]["result"]
    except urllib.error.HTTPError as e:
        bad.append(f"{where}: {q}: {e.read().decode(errors='replace')}")
        continue
    print(f"  {where}: {len(result)} series", file=sys.stderr)
    if m:
        values = {s["metric"].get(m.group(2)) for s in result}
        wanted = {"pool": [pool], "image": images}.get(m.group(2), [])
        if not values or not set(wanted) <= values:
            bad.append(f"{where}: {q} found {sorted(v for v in values if v)}, wanted {wanted}")
if bad:
    sys.exit("\n".join(bad))
PY

step "provoking CephRBDMirrorDaemonDown: stopping the daemon"
"$LAB_SH" mirror-stop site-b
OURS=0
down_alert() {
  api alerts | jq -e --arg addr "$METRICS_ADDR" \
    '[.data.alerts[] | select(.labels.alertname == "CephRBDMirrorDaemonDown" and .labels.instance == $addr
      and (.state == "pending" or .state == "firing")
      and .labels.severity == "critical" and .labels.type == "ceph_default")] | length == 1' >/dev/null
}
wait_for "CephRBDMirrorDaemonDown to become active for $METRICS_ADDR" down_alert
api "query?query=ALERTS%7Balertname%3D%22CephRBDMirrorDaemonDown%22%7D" |
  jq -e --arg addr "$METRICS_ADDR" '[.data.result[] | select(.metric.instance == $addr)] | length >= 1' >/dev/null ||
  fail "no ALERTS series for CephRBDMirrorDaemonDown"
api rules >"$GROUPS_JSON"
log "CephRBDMirrorDaemonDown is $(state CephRBDMirrorDaemonDown) for $METRICS_ADDR (fires after its 'for: 1m'), CephRBDMirrorImagesPerDaemonHigh $(state CephRBDMirrorImagesPerDaemonHigh)"
[[ $(state CephRBDMirrorImagesPerDaemonHigh) == inactive ]] || fail "CephRBDMirrorImagesPerDaemonHigh is not inactive"
