#!/usr/bin/env bash
# swarm-netns.sh — one region of DEVICES real agents on throttled links: how long
# a patch takes to reach all of them, and how many bytes the control plane sent.
#
# The helper behind `deno task bench:swarm` (scripts/swarm_bench.ts), which runs
# it once per region size and prints the table. Built on scripts/fleet-netns.sh
# (same namespaces, bridge, keys, tokens, enrolment and trap-based teardown):
#
#   pbswarm-<pid>-br   bridge br0 and the bridge-side end of every veth
#   pbswarm-<pid>-cp   control plane   100.64.0.1/16 (UDP 7400, blobs 7401, HTTP 7402)
#   pbswarm-<pid>-op   operator        100.64.0.2/16 (publish, rollout, the status watcher)
#   pbswarm-<pid>-dI   device I        100.64.1.0/16 + I: one `mod.ts agent`, enrolled
#
# Links: every device's veth is shaped in BOTH directions (the device-side end's
# egress is its upload, the bridge-side end's egress its download): RATE with a
# token bucket (tbf), plus DELAY one way per direction with netem when the kernel
# has sch_netem (else the delay is reported as not applied). The control plane's
# link is shaped the same unless --cp-unshaped, with htb so that its traffic with
# the operator (publish, the status polls) is exempt and does not eat the rate the
# devices share; the operator's own link is never shaped. Shaping is switched on after v1 is everywhere, so the unmeasured
# first install and the upload of v2 to the control plane run at veth speed.
#
# Scenario: v1 = (BLOB_MIB + 4) MiB of random bytes, published and rolled out to
# every device (unshaped); v2 = v1 with BLOB_MIB MiB rewritten is published (its
# patch from v1 is about BLOB_MIB MiB); then the links are shaped and v2 is rolled
# out to the region (--region r0). scripts/swarm_status.ts watches GET /v1/status
# from the operator's namespace, one poll a second, until every device runs
# v2; each device's done time is its rollout row's `updated` (the control plane's
# clock when it reported v2 active) minus the rollout's `created`. Between the
# rollout and the end it also counts the control plane's served blob bytes (the
# status report's controlPlane.served), each device's served bytes (uploads to
# peers), the bytes the control plane's eth0 sent, and CPU: the machine's busy
# share (from /proc/stat: other users of the machine count too) and the CPU
# seconds of the control plane and agents (their share of all cores).
#
# Output: human lines "swarm-netns: ..." and, last, one line
# "swarm-netns: result {JSON}" (fields: see scripts/swarm_status.ts, SwarmResult).
# If it cannot run here (not root, no iproute2/tc, no namespaces, veth, bridge or
# tbf) it prints "swarm-netns: skipped: <why>" and exits 0; on failure it prints
# the reason and log tails and exits 1. Whatever happens, the EXIT trap kills the
# processes it started and deletes its namespaces and temporary directory;
# leftovers of a run killed by SIGKILL (pbswarm-<pid>-*, swarm-netns.<pid>.*) are
# removed at start.
#
# Usage: scripts/swarm-netns.sh [--devices N] [--rate RATE] [--delay DELAY] [--blob-mib M]
#                               [--cp-unshaped] [--timeout SECONDS] [--agent-args 'ARGS']
#                               [--max-failures P%]
# Defaults: 1 device, 20mbit, 50ms, 60 MiB; RATE as tc writes it (20mbit, 512kbit), DELAY
# as tc (50ms, 0ms); timeout: 120 s + 2 x DEVICES x (patch at RATE); --agent-args: extra
# words for every `mod.ts agent` (split on spaces, e.g. '--upload-slots 4'); --max-failures:
# v2's rollout halts when more than P% of the region failed (default: poolboy rollout's,
# 20%; a halted rollout, or one with no progress for 90 s, ends the run at once, as a
# failure that says why and which devices were done when). Environment: DENO, TMPDIR.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVICES=1
RATE=20mbit
DELAY=50ms
BLOB_MIB=60
CP_SHAPED=1
TIMEOUT_S=""
AGENT_ARGS=()
CP_ARGS=()
MAX_FAILURES=""
MODEL=swarm-model
REGION=r0
CP_IP=100.64.0.1
OP_IP=100.64.0.2
CP_URL="http://$CP_IP:7402"
START_TIMEOUT_S=120
export NO_COLOR=1 DENO_NO_UPDATE_CHECK=1

say() { printf 'swarm-netns: %s\n' "$*"; }
skip() {
  say "skipped: $*"
  exit 0
}
usage() { sed -n '/^# Usage:/,/Environment: DENO, TMPDIR\./p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --devices) DEVICES=${2:?--devices needs a value}; shift 2 ;;
    --rate) RATE=${2:?--rate needs a value}; shift 2 ;;
    --delay) DELAY=${2:?--delay needs a value}; shift 2 ;;
    --blob-mib) BLOB_MIB=${2:?--blob-mib needs a value}; shift 2 ;;
    --timeout) TIMEOUT_S=${2:?--timeout needs a value}; shift 2 ;;
    --cp-unshaped) CP_SHAPED=0; shift ;;
    --max-failures) MAX_FAILURES=${2:?--max-failures needs a value}; shift 2 ;;
    --agent-args) read -r -a AGENT_ARGS <<<"${2?--agent-args needs a value}"; shift 2 ;;
    --cp-args) read -r -a CP_ARGS <<<"${2?--cp-args needs a value}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "swarm-netns: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$DEVICES" =~ ^[0-9]+$ ]] && [ "$DEVICES" -ge 1 ] && [ "$DEVICES" -le 250 ] ||
  { echo "swarm-netns: --devices must be 1..250, got '$DEVICES'" >&2; exit 2; }
[[ "$RATE" =~ ^[0-9]+(kbit|mbit|gbit)$ ]] ||
  { echo "swarm-netns: --rate must look like 20mbit, 512kbit or 1gbit, got '$RATE'" >&2; exit 2; }
[[ "$DELAY" =~ ^[0-9]+ms$ ]] ||
  { echo "swarm-netns: --delay must look like 50ms or 0ms, got '$DELAY'" >&2; exit 2; }
[[ "$BLOB_MIB" =~ ^[0-9]+$ ]] && [ "$BLOB_MIB" -ge 1 ] && [ "$BLOB_MIB" -le 1024 ] ||
  { echo "swarm-netns: --blob-mib must be 1..1024, got '$BLOB_MIB'" >&2; exit 2; }
if [ -n "$MAX_FAILURES" ] && ! [[ "$MAX_FAILURES" =~ ^[0-9]{1,3}%$ ]]; then
  echo "swarm-netns: --max-failures must look like 20% or 100%, got '$MAX_FAILURES'" >&2
  exit 2
fi
if [ -n "$TIMEOUT_S" ] && ! [[ "$TIMEOUT_S" =~ ^[1-9][0-9]*$ ]]; then
  echo "swarm-netns: --timeout must be a whole number of seconds, got '$TIMEOUT_S'" >&2
  exit 2
fi
RATE_KBIT=${RATE%bit}
case "$RATE_KBIT" in
  *k) RATE_KBIT=${RATE_KBIT%k} ;;
  *m) RATE_KBIT=$((${RATE_KBIT%m} * 1000)) ;;
  *g) RATE_KBIT=$((${RATE_KBIT%g} * 1000000)) ;;
esac
[ "$RATE_KBIT" -ge 64 ] || { echo "swarm-netns: --rate must be at least 64kbit" >&2; exit 2; }
DELAY_MS=${DELAY%ms}
# Seconds one patch needs at RATE, rounded up; the default timeout allows the leader-serves-all
# protocol twice over.
PATCH_S=$(((BLOB_MIB * 1048576 * 8 / 1000 + RATE_KBIT - 1) / RATE_KBIT))
[ -n "$TIMEOUT_S" ] || TIMEOUT_S=$((120 + 2 * DEVICES * PATCH_S))

# ---------------------------------------------------------------- can we run?
command -v ip >/dev/null 2>&1 || skip "the ip command (iproute2) is not installed"
command -v tc >/dev/null 2>&1 || skip "the tc command (iproute2) is not installed"
[ "$(id -u)" = "0" ] || skip "not root (uid $(id -u)): creating network namespaces needs root"
DENO=${DENO:-$(command -v deno || true)}
[ -n "$DENO" ] && [ -x "$DENO" ] ||
  { echo "swarm-netns: no deno binary (put deno on PATH or set DENO=/path/to/deno)" >&2; exit 2; }

PREFIX="pbswarm-$$"
NAMESPACES=() # every namespace this run created, deleted by cleanup
PIDS=()       # every background process this run started
TMP=""
cleanup_done=0

cleanup() {
  local status=$?
  [ "$cleanup_done" = 1 ] && return "$status"
  cleanup_done=1
  set +e
  trap '' INT TERM HUP
  local pid ns n
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for n in $(seq 50); do # up to 5 s for a clean stop
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  for ns in "${NAMESPACES[@]}"; do
    # Anything still running inside one of our namespaces was started by this run.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  # Deleting the namespaces deleted the bridge, both ends of every veth and their qdiscs.
  local left
  left=$(ip netns list 2>/dev/null | awk -v p="$PREFIX-" 'index($1, p) == 1 { print $1 }')
  [ -n "$left" ] && echo "swarm-netns: warning: namespaces left behind: $left" >&2
  # SWARM_NETNS_KEEP=DIR keeps every process's log there (to read a run afterwards).
  [ -n "${SWARM_NETNS_KEEP:-}" ] && [ -n "$TMP" ] && cp -r "$TMP/logs" "$SWARM_NETNS_KEEP" 2>/dev/null
  [ -n "$TMP" ] && rm -rf "$TMP"
  return "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Namespaces and directories of an earlier run that could not clean up (SIGKILL): its pid is gone.
for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E '^pbswarm-[0-9]+-' || true); do
  owner=${ns#pbswarm-}
  owner=${owner%%-*}
  if [ "$owner" != "$$" ] && ! kill -0 "$owner" 2>/dev/null; then
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null && echo "swarm-netns: removed stale namespace $ns" >&2 || true
  fi
done
for dir in "${TMPDIR:-/tmp}"/swarm-netns.*.*; do
  owner=${dir##*/swarm-netns.}
  owner=${owner%%.*}
  [[ "$owner" =~ ^[0-9]+$ ]] && [ -d "$dir" ] || continue
  if [ "$owner" != "$$" ] && ! kill -0 "$owner" 2>/dev/null; then
    rm -rf "$dir" && echo "swarm-netns: removed stale directory $dir" >&2
  fi
done

# Probe: namespaces, a bridge, a veth, tbf; netem is optional (the delay).
probe="$PREFIX-probe"
if ! err=$(ip netns add "$probe" 2>&1); then
  skip "cannot create a network namespace (ip netns add: ${err//$'\n'/ })"
fi
NAMESPACES+=("$probe")
if ! err=$(ip netns exec "$probe" true 2>&1); then
  skip "cannot enter a network namespace (ip netns exec: ${err//$'\n'/ })"
fi
if ! err=$(ip -n "$probe" link add br0 type bridge 2>&1); then
  skip "cannot create a bridge in a namespace (${err//$'\n'/ })"
fi
if ! err=$(ip -n "$probe" link add v0 type veth peer name v1 2>&1); then
  skip "cannot create a veth pair in a namespace (${err//$'\n'/ })"
fi
if ! err=$(tc -n "$probe" qdisc add dev v0 root handle 1: tbf rate "$RATE" burst 64kb latency 200ms 2>&1); then
  skip "cannot shape a link with tc tbf (${err//$'\n'/ })"
fi
NETEM=0
DELAY_NOTE="delay ${DELAY} each way per link (netem)"
if [ "$DELAY_MS" -gt 0 ]; then
  if tc -n "$probe" qdisc add dev v0 parent 1:1 handle 10: netem delay "$DELAY" >/dev/null 2>&1; then
    NETEM=1
  else
    DELAY_NOTE="delay NOT applied: this kernel has no sch_netem (tc qdisc netem: unknown kind)"
  fi
else
  DELAY_NOTE="no delay (--delay 0ms)"
fi
ip netns del "$probe"
NAMESPACES=()

# ---------------------------------------------------------------- set up
TMP=$(mktemp -d "${TMPDIR:-/tmp}/swarm-netns.$$.XXXXXX")
mkdir -p "$TMP/logs" "$TMP/models" "$TMP/cp" "$TMP/agents"

now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%01d s' $(($1 / 1000)) $((($1 % 1000) / 100)); }

LOGS=()
fail() {
  say "FAILED: $*"
  local log
  for log in "${LOGS[@]}"; do
    [ -s "$log" ] || continue
    echo "----- last 15 lines of $(basename "$log")"
    tail -n 15 "$log"
  done
  exit 1
}

# mod.ts and its npm dependency must be in Deno's cache: the namespaces reach no registry.
"$DENO" cache --quiet --config "$REPO/deno.json" "$REPO/mod.ts" "$REPO/codec/hash_worker.ts" \
  "$REPO/scripts/swarm_status.ts" >"$TMP/logs/cache.log" 2>&1 ||
  echo "swarm-netns: warning: deno cache failed (see below if the run fails)" >&2
LOGS+=("$TMP/logs/cache.log")

BR="$PREFIX-br"
CP_NS="$PREFIX-cp"
OP_NS="$PREFIX-op"
ip netns add "$BR"
NAMESPACES+=("$BR")
ip -n "$BR" link set lo up
ip -n "$BR" link add br0 type bridge forward_delay 0 stp_state 0
ip -n "$BR" link set br0 up

# add_host NS PORTNAME IP: a namespace whose eth0 is wired to br0.
add_host() {
  local ns=$1 port=$2 addr=$3
  ip netns add "$ns"
  NAMESPACES+=("$ns")
  ip -n "$BR" link add "$port" type veth peer name eth0 netns "$ns"
  ip -n "$BR" link set "$port" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$addr/16" dev eth0
  ip -n "$ns" link set eth0 up
}

# shape NS DEV: RATE (tbf) and, with netem, DELAY on DEV's egress.
shape() {
  local ns=$1 dev=$2
  tc -n "$ns" qdisc replace dev "$dev" root handle 1: tbf rate "$RATE" burst 64kb latency 200ms
  [ "$NETEM" = 1 ] && tc -n "$ns" qdisc add dev "$dev" parent 1:1 handle 10: netem delay "$DELAY" limit 100000
  return 0
}
# shape_link NS PORTNAME: both directions of the host in NS (its upload, its download).
shape_link() {
  shape "$1" eth0 || fail "tc on $1 eth0 failed"
  shape "$BR" "$2" || fail "tc on $BR $2 failed"
}
# shape_exempt NS DEV MATCH: like shape, with htb: packets matching MATCH (u32, e.g.
# "ip dst 100.64.0.2/32") in an unshaped class, everything else at RATE (+ DELAY).
shape_exempt() {
  local ns=$1 dev=$2
  shift 2
  tc -n "$ns" qdisc replace dev "$dev" root handle 1: htb default 10 &&
    tc -n "$ns" class add dev "$dev" parent 1: classid 1:10 htb rate "$RATE" ceil "$RATE" \
      burst 64kb cburst 64kb quantum 60000 &&
    tc -n "$ns" class add dev "$dev" parent 1: classid 1:20 htb rate 10gbit quantum 60000 &&
    tc -n "$ns" filter add dev "$dev" parent 1: protocol ip prio 1 u32 match "$@" flowid 1:20 ||
    return 1
  [ "$NETEM" = 1 ] && tc -n "$ns" qdisc add dev "$dev" parent 1:10 handle 10: netem delay "$DELAY" limit 100000
  return 0
}

add_host "$CP_NS" p-cp "$CP_IP"
add_host "$OP_NS" p-op "$OP_IP"
DEV_NS=()
DEV_ID=()
DEV_IP=()
for ((i = 0; i < DEVICES; i++)); do
  DEV_NS+=("$PREFIX-d$i")
  DEV_ID+=("$(printf 'd%03d' "$i")")
  DEV_IP+=("100.64.$((1 + i / 250)).$((1 + i % 250))")
  add_host "${DEV_NS[i]}" "p-d$i" "${DEV_IP[i]}"
done

# ---------------------------------------------------------------- keys and tokens
KEYS="$TMP/keys"
TRUST="$TMP/trust"
keytool() {
  "$DENO" run --quiet --no-prompt --config "$REPO/deno.json" --allow-read="$KEYS" \
    --allow-write="$KEYS" "$REPO/mod.ts" "$@" >>"$TMP/logs/keys.log" 2>&1 ||
    fail "poolboy $1 failed: $(tail -n 1 "$TMP/logs/keys.log")"
}
LOGS+=("$TMP/logs/keys.log")
mkdir -p "$KEYS" "$TRUST"
keytool keygen root -o "$KEYS"
keytool keygen release -o "$KEYS"
keytool delegate --root "$KEYS/root.key" --release "$KEYS/release.pub" -o "$KEYS/keys.json"
cp "$KEYS/root.pub" "$TRUST/root.pub"
token_create() {
  "$DENO" run --quiet --no-prompt --config "$REPO/deno.json" \
    --allow-read="$TMP/cp" --allow-write="$TMP/cp" "$REPO/mod.ts" \
    token create --data "$TMP/cp" --role "$1" --name "$2" 2>>"$TMP/logs/keys.log" ||
    fail "poolboy token create ($1) failed: $(tail -n 1 "$TMP/logs/keys.log")"
}
POOLBOY_TOKEN=$(token_create deployer operator)
export POOLBOY_TOKEN
ADMIN_TOKEN=$(token_create admin enroller)

say "region $REGION: $DEVICES devices; namespaces $PREFIX-{br,cp,op,d0..d$((DEVICES - 1))}; bridge br0 in $BR"
say "addresses: control plane $CP_IP, operator $OP_IP, devices ${DEV_IP[0]}..${DEV_IP[DEVICES - 1]}"

# ---------------------------------------------------------------- processes
# run_poolboy NS LOG READ WRITE ARGS...: mod.ts in NS, in the background (ip netns exec
# execs deno, so the pid is deno's: its CPU time is read from /proc/PID/stat).
run_poolboy() {
  local ns=$1 log=$2 read=$3 write=$4
  shift 4
  ip netns exec "$ns" "$DENO" run --quiet --no-prompt --config "$REPO/deno.json" \
    --allow-net=100.64.0.0/10 --allow-read="$read" --allow-write="$write" \
    --allow-sys=statfs \
    "$REPO/mod.ts" "$@" </dev/null >>"$log" 2>&1 &
  PIDS+=($!)
  LOGS+=("$log")
}

OP_READ="$TMP/models,$KEYS/release.key,$KEYS/keys.json,$REPO/codec,$REPO/kernel"
op() {
  timeout 300 ip netns exec "$OP_NS" "$DENO" run --quiet --no-prompt --config "$REPO/deno.json" \
    --allow-net=100.64.0.0/10 --allow-read="$OP_READ" --allow-env=POOLBOY_TOKEN \
    "$REPO/mod.ts" "$@"
}
# watch ARGS...: scripts/swarm_status.ts in the operator's namespace (network: the fleet only),
# run in the background and waited for, so that a signal to this script interrupts the wait
# (bash runs a trap only once a foreground command has ended) and cleanup stops it.
watch() {
  ip netns exec "$OP_NS" "$DENO" run --quiet --no-prompt --config "$REPO/deno.json" \
    --allow-net=100.64.0.0/10 --allow-env=POOLBOY_TOKEN --allow-read="$TMP" \
    "$REPO/scripts/swarm_status.ts" "$@" &
  local pid=$!
  PIDS+=("$pid")
  wait "$pid"
}
# local_json ARGS...: swarm_status.ts's pure modes (stdin to stdout), no permission at all.
local_json() {
  "$DENO" run --quiet --no-prompt --config "$REPO/deno.json" --allow-read="$TMP" \
    "$REPO/scripts/swarm_status.ts" "$@"
}
LOGS+=("$TMP/logs/op.log")

t0=$(now_ms)
run_poolboy "$CP_NS" "$TMP/logs/cp.log" "$TMP/cp,$REPO/codec,$REPO/kernel" "$TMP/cp" \
  controlplane --bind "$CP_IP" --data "$TMP/cp" ${CP_ARGS[@]+"${CP_ARGS[@]}"}
CP_PID=${PIDS[-1]}
watch wait-online --url "$CP_URL" --devices 0 --timeout "$START_TIMEOUT_S" 2>>"$TMP/logs/op.log" ||
  fail "the control plane's API did not answer within ${START_TIMEOUT_S} s"
say "control plane up in $(secs $(($(now_ms) - t0))) (pid $CP_PID)"

ENROLL_TOKEN=$(op device enroll-token --control-plane "$CP_URL" --token "$ADMIN_TOKEN" \
  --uses "$DEVICES" --expires 30m --json 2>>"$TMP/logs/op.log" |
  sed -n 's/.*"token": *"\(pbe_[A-Za-z0-9_-]*\)".*/\1/p') ||
  fail "poolboy device enroll-token failed: $(tail -n 1 "$TMP/logs/op.log")"
[ -n "$ENROLL_TOKEN" ] || fail "poolboy device enroll-token printed no token"
AGENT_PIDS=()
for ((i = 0; i < DEVICES; i++)); do
  data="$TMP/agents/${DEV_ID[i]}"
  mkdir -p "$data"
  run_poolboy "${DEV_NS[i]}" "$TMP/logs/${DEV_ID[i]}.log" "$data,$TRUST" "$data" \
    agent --control-plane "$CP_IP" --bind "${DEV_IP[i]}" --node-id "${DEV_ID[i]}" \
    --region "$REGION" --data "$data" --heartbeat-interval 1s \
    --trust-root "$TRUST/root.pub" --enroll "$ENROLL_TOKEN" ${AGENT_ARGS[@]+"${AGENT_ARGS[@]}"}
  AGENT_PIDS+=("${PIDS[-1]}")
done
watch wait-online --url "$CP_URL" --devices "$DEVICES" --timeout "$START_TIMEOUT_S" \
  2>>"$TMP/logs/op.log" || fail "not every device came online within ${START_TIMEOUT_S} s: $(tail -n 1 "$TMP/logs/op.log")"
say "$DEVICES/$DEVICES devices enrolled and online in $(secs $(($(now_ms) - t0)))"

# ---------------------------------------------------------------- v1, unshaped
V1="$TMP/models/v1.bin"
V2="$TMP/models/v2.bin"
head -c $(((BLOB_MIB + 4) * 1048576)) /dev/urandom >"$V1"
cp "$V1" "$V2"
dd if=/dev/urandom of="$V2" bs=1M count="$BLOB_MIB" seek=2 conv=notrunc status=none

# publish VERSION FILE BASE: sets DIGEST, SIZE, PATCH (bytes, or - for none).
publish() {
  local out
  out=$(op publish --control-plane "$CP_URL" --model "$MODEL" --version "$1" --json \
    --key "$KEYS/release.key" --keys "$KEYS/keys.json" "$2" 2>>"$TMP/logs/op.log") ||
    fail "publish $1: $(tail -n 1 "$TMP/logs/op.log")"
  read -r DIGEST SIZE PATCH <<<"$(local_json publish "$3" <<<"$out")"
  [[ "$DIGEST" =~ ^[0-9a-f]{64}$ ]] || fail "publish $1: unexpected answer: ${out:0:200}"
}
# rollout VERSION [ARGS...]: sets ROLLOUT_ID.
rollout() {
  local out version=$1
  shift
  out=$(op rollout --control-plane "$CP_URL" --model "$MODEL" --version "$version" \
    --region "$REGION" "$@" --json 2>>"$TMP/logs/op.log") ||
    fail "rollout $version: $(tail -n 1 "$TMP/logs/op.log")"
  ROLLOUT_ID=$(local_json rollout <<<"$out")
}

t1=$(now_ms)
publish v1 "$V1" ""
rollout v1
watch wait-done --url "$CP_URL" --model "$MODEL" --digest "$DIGEST" --devices "$DEVICES" \
  --rollout "$ROLLOUT_ID" --timeout $((START_TIMEOUT_S + 10 * DEVICES)) \
  >"$TMP/v1.json" 2>>"$TMP/logs/op.log" ||
  fail "v1 did not reach every device: $(tail -n 1 "$TMP/logs/op.log")"
say "v1 ($SIZE bytes, whole file, links unshaped) on $DEVICES/$DEVICES devices in $(secs $(($(now_ms) - t1)))"

# ---------------------------------------------------------------- v2 published, shape, roll out
# Published before the links are shaped: the upload of v2 to the control plane is not measured.
t2=$(now_ms)
publish v2 "$V2" v1
[ "$PATCH" != "-" ] || fail "publish v2 prepared no patch from v1"
say "v2 published in $(secs $(($(now_ms) - t2))): patch from v1 $PATCH bytes (v2 is $SIZE bytes); one patch at $RATE takes ~$PATCH_S s"

for ((i = 0; i < DEVICES; i++)); do shape_link "${DEV_NS[i]}" "p-d$i"; done
CP_LINK="control plane link unshaped (--cp-unshaped)"
if [ "$CP_SHAPED" = 1 ]; then
  shape_exempt "$CP_NS" eth0 ip dst "$OP_IP/32" || fail "tc (htb) on $CP_NS eth0 failed"
  shape_exempt "$BR" p-cp ip src "$OP_IP/32" || fail "tc (htb) on $BR p-cp failed"
  CP_LINK="control plane link shaped like a device's (its traffic with the operator exempt)"
fi
say "links: every device $RATE each way, $DELAY_NOTE; $CP_LINK; operator link unshaped"

watch snapshot --url "$CP_URL" >"$TMP/before.json" 2>>"$TMP/logs/op.log" ||
  fail "status before v2: $(tail -n 1 "$TMP/logs/op.log")"
cp_tx_before=$(ip netns exec "$CP_NS" cat /sys/class/net/eth0/statistics/tx_bytes)
read -r _ u n s idle io irq sirq _ <<<"$(head -n 1 /proc/stat)"
busy_before=$((u + n + s + irq + sirq))
total_before=$((u + n + s + idle + io + irq + sirq))
proc_ticks() { # the utime+stime clock ticks of PIDs still alive
  local pid sum=0 f
  for pid in "$@"; do
    f=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    f=${f##*) }
    read -r -a fields <<<"$f"
    sum=$((sum + fields[11] + fields[12]))
  done
  echo "$sum"
}
cp_ticks_before=$(proc_ticks "$CP_PID")
agent_ticks_before=$(proc_ticks "${AGENT_PIDS[@]}")

window_start=$(now_ms)
rollout v2 ${MAX_FAILURES:+--max-failures "$MAX_FAILURES"}
say "v2 rolled out to region $REGION (rollout $ROLLOUT_ID${MAX_FAILURES:+, --max-failures $MAX_FAILURES}); waiting up to $TIMEOUT_S s"
watch wait-done --url "$CP_URL" --model "$MODEL" --digest "$DIGEST" --devices "$DEVICES" \
  --rollout "$ROLLOUT_ID" --timeout "$TIMEOUT_S" --progress >"$TMP/after.json" ||
  fail "v2 did not reach every device ($(($(now_ms) - window_start)) ms after the rollout): $(tail -n 1 "$TMP/after.json")"

window_ms=$(($(now_ms) - window_start))
read -r _ u n s idle io irq sirq _ <<<"$(head -n 1 /proc/stat)"
busy=$((u + n + s + irq + sirq - busy_before))
total=$((u + n + s + idle + io + irq + sirq - total_before))
hz=$(getconf CLK_TCK)
cp_cpu_ms=$((($(proc_ticks "$CP_PID") - cp_ticks_before) * 1000 / hz))
agent_cpu_ms=$((($(proc_ticks "${AGENT_PIDS[@]}") - agent_ticks_before) * 1000 / hz))
cp_tx=$(($(ip netns exec "$CP_NS" cat /sys/class/net/eth0/statistics/tx_bytes) - cp_tx_before))
# Served bytes reach the control plane by heartbeat (1 s): one more snapshot after 2 s.
sleep 2
watch snapshot --url "$CP_URL" >"$TMP/end.json" 2>>"$TMP/logs/op.log" ||
  fail "status after v2: $(tail -n 1 "$TMP/logs/op.log")"

result=$(local_json result --before "$TMP/before.json" --after "$TMP/after.json" --end "$TMP/end.json" \
  --devices "$DEVICES" --patch-bytes "$PATCH" --rate "$RATE" --delay "$DELAY" --netem "$NETEM" \
  --cp-shaped "$CP_SHAPED" --cp-tx-bytes "$cp_tx" --busy-ticks "$busy" --total-ticks "$total" \
  --cpus "$(nproc)" --window-ms "$window_ms" --cp-cpu-ms "$cp_cpu_ms" --agents-cpu-ms "$agent_cpu_ms" \
  2>>"$TMP/logs/op.log") || fail "could not build the result: $(tail -n 1 "$TMP/logs/op.log")"
say "v2 on $DEVICES/$DEVICES devices; total $(secs $(($(now_ms) - t0)))"
say "result $result"
