#!/usr/bin/env bash
# fleet-netns.sh — poolboy's fleet, end to end, over a real (virtual) network.
#
# The e2e tests run every process on loopback; this runs them the way a fleet
# does, each on its own host: one Linux network namespace per process, wired by
# veth pairs to a bridge that lives in a namespace of its own (nothing is added
# to the root namespace's network):
#
#   pbnet-<pid>-cp   control plane      100.64.0.1/24   (UDP 7400, blobs 7401, HTTP 7402)
#   pbnet-<pid>-op   operator           100.64.0.2/24   (runs publish / rollout / status)
#   pbnet-<pid>-aI   agent I            100.64.0.(11+I)/24 (UDP 7410, blobs 7411)
#   pbnet-<pid>-br   bridge br0 and the bridge-side end of every veth
#
# Every poolboy process runs as `ip netns exec NS deno run ... mod.ts CMD` with
# --allow-net=100.64.0.0/10 and no other network permission, --allow-read /
# --allow-write limited to its own data directory (plus codec/ and kernel/ readable by the
# control plane, whose hashing Worker loads it) and no environment variable;
# an agent may also read the
# directory holding root.pub (and nothing else of the keys). The operator
# commands get --allow-net=100.64.0.0/10, read access to the model files,
# the release key and the delegation (and codec/, kernel/ for publish's hashing)
# and --allow-env=POOLBOY_TOKEN: their API token, a deployer's, made with
# `poolboy token create` on the control plane's data dir before it starts.
#
# Keys first, as a real fleet: `poolboy keygen root`, `keygen release` and
# `delegate` (outside the namespaces: they need no network) into $TMP/keys;
# root.pub is copied to $TMP/trust, which every agent pins with --trust-root;
# publish signs with --key/--keys.
#
# Scenario: start the control plane (--agent-timeout 1500ms) and the agents
# (--heartbeat-interval 250ms, spread round-robin over the regions r0, r1, ...),
# check connectivity (ping if installed, else a TCP connect from every namespace
# to the control plane's HTTP port), make an 8 MiB random v1 and a v2 with
# 64 KiB rewritten in the middle, publish and roll out v1, wait until every
# agent runs it, publish and roll out v2 (a patch), wait again, then hash every
# agent's DATA/models/NAME/current with `mod.ts hash` (--allow-read of the
# agents' dirs, codec/ and kernel/, which its hashing Worker loads) and compare it with
# v2's published digest. Prints a summary and exits 0; on failure prints the reason
# and the tails of the logs and exits 1.
#
# If it cannot run here (not root, no iproute2, no network namespaces, veth or
# bridge support) it prints one line "fleet-netns: skipped: <why>" and exits 0.
# Whatever happens (success, failure, Ctrl-C, SIGTERM) the EXIT trap kills the
# processes it started, deletes its namespaces (and with them the bridge and
# veths) and the temporary directory. What an earlier run killed by SIGKILL left
# (namespaces pbnet-<pid>-* and the processes in them, directories
# fleet-netns.<pid>.*, whose <pid> is gone) is removed at start.
#
# Usage: scripts/fleet-netns.sh [--agents N] [--regions R]
# Environment: AGENTS (default 4), REGIONS (default 2, at most AGENTS), DENO (the deno binary;
# default: deno on PATH), TMPDIR.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AGENTS=${AGENTS:-4}
REGIONS=${REGIONS:-}
MODEL=netns-model
MODEL_MIB=8
CP_IP=100.64.0.1
OP_IP=100.64.0.2
AGENT_IP_BASE=11 # agent I at 100.64.0.(11+I)
CP_URL="http://$CP_IP:7402"
CONVERGE_TIMEOUT_S=60
START_TIMEOUT_S=30
export NO_COLOR=1 DENO_NO_UPDATE_CHECK=1

say() { printf 'fleet-netns: %s\n' "$*"; }
skip() {
  say "skipped: $*"
  exit 0
}
usage() { sed -n '/^# Usage:/,/^# default: deno/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --agents) AGENTS=${2:?--agents needs a value}; shift 2 ;;
    --agents=*) AGENTS=${1#*=}; shift ;;
    --regions) REGIONS=${2:?--regions needs a value}; shift 2 ;;
    --regions=*) REGIONS=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "fleet-netns: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$AGENTS" =~ ^[0-9]+$ ]] && [ "$AGENTS" -ge 1 ] && [ "$AGENTS" -le 200 ] ||
  { echo "fleet-netns: AGENTS must be 1..200, got '$AGENTS'" >&2; exit 2; }
[ -n "$REGIONS" ] || REGIONS=$((AGENTS < 2 ? AGENTS : 2))
[[ "$REGIONS" =~ ^[0-9]+$ ]] && [ "$REGIONS" -ge 1 ] && [ "$REGIONS" -le "$AGENTS" ] ||
  { echo "fleet-netns: REGIONS must be 1..AGENTS, got '$REGIONS'" >&2; exit 2; }

# ---------------------------------------------------------------- can we run?
command -v ip >/dev/null 2>&1 || skip "the ip command (iproute2) is not installed"
[ "$(id -u)" = "0" ] || skip "not root (uid $(id -u)): creating network namespaces needs root"
DENO=${DENO:-$(command -v deno || true)}
[ -n "$DENO" ] && [ -x "$DENO" ] ||
  { echo "fleet-netns: no deno binary (put deno on PATH or set DENO=/path/to/deno)" >&2; exit 2; }

PREFIX="pbnet-$$"
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
  # Deleting the namespaces deleted the bridge and both ends of every veth.
  local left
  left=$(ip netns list 2>/dev/null | awk -v p="$PREFIX-" 'index($1, p) == 1 { print $1 }')
  [ -n "$left" ] && echo "fleet-netns: warning: namespaces left behind: $left" >&2
  [ -n "$TMP" ] && rm -rf "$TMP"
  return "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Namespaces of an earlier run that could not clean up (SIGKILL): its pid is gone.
for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E '^pbnet-[0-9]+-' || true); do
  owner=${ns#pbnet-}
  owner=${owner%%-*}
  if [ "$owner" != "$$" ] && ! kill -0 "$owner" 2>/dev/null; then
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null && echo "fleet-netns: removed stale namespace $ns" >&2 || true
  fi
done
for dir in "${TMPDIR:-/tmp}"/fleet-netns.*.*; do
  owner=${dir##*/fleet-netns.}
  owner=${owner%%.*}
  [[ "$owner" =~ ^[0-9]+$ ]] && [ -d "$dir" ] || continue
  if [ "$owner" != "$$" ] && ! kill -0 "$owner" 2>/dev/null; then
    rm -rf "$dir" && echo "fleet-netns: removed stale directory $dir" >&2
  fi
done

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
ip netns del "$probe"
NAMESPACES=()

# ---------------------------------------------------------------- set up
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fleet-netns.$$.XXXXXX")
mkdir -p "$TMP/logs" "$TMP/models" "$TMP/cp" "$TMP/agents"

now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%01d s' $(($1 / 1000)) $((($1 % 1000) / 100)); }

LOGS=()
fail() {
  say "FAILED: $*"
  local log
  for log in "${LOGS[@]}"; do
    [ -s "$log" ] || continue
    echo "----- last 25 lines of $(basename "$log")"
    tail -n 25 "$log"
  done
  exit 1
}

# A tiny JSON reader for the CLI's --json output, run with no permission at all.
JSON_TS="$TMP/json.ts"
cat >"$JSON_TS" <<'EOF'
// deno run json.ts MODE ARGS... < answer.json (no permissions: reads stdin only)
const input = JSON.parse(await new Response(Deno.stdin.readable).text());
const [mode, ...args] = Deno.args;
type Agent = { nodeId: string; online: boolean; active: Record<string, string>; served: number };
const agents = (): Agent[] => input.agents ?? [];
switch (mode) {
  case "publish": { // -> "<digest> <size> <patch bytes from FROM or ->"
    const patch = input.patches?.find((p: { from: string }) => p.from === args[0]);
    console.log(`${input.version.digest} ${input.version.size} ${patch ? patch.size : "-"}`);
    break;
  }
  case "rollout": // -> rollout id
    console.log(input.id);
    break;
  case "online": { // N -> exit 0 when N agents are online; prints the count
    const n = agents().filter((a) => a.online).length;
    console.log(n);
    Deno.exit(n >= Number(args[0]) ? 0 : 1);
    break;
  }
  case "converged": { // MODEL DIGEST N -> exit 0 when N online agents run DIGEST
    const done = agents().filter((a) => a.online && a.active[args[0]] === args[1]).length;
    console.log(`${done}/${args[2]}`);
    Deno.exit(done >= Number(args[2]) ? 0 : 1);
    break;
  }
  case "served": // -> "<control plane bytes> <bytes agents served to peers>"
    console.log(`${input.controlPlane.served} ${agents().reduce((s, a) => s + a.served, 0)}`);
    break;
  case "rollout-state": { // a one-line account of the last rollout, for failures
    const r = (input.rollouts ?? []).at(-1);
    const states = (r?.agents ?? []).map((a: { nodeId: string; state: string; detail: string }) =>
      `${a.nodeId}=${a.state}${a.detail ? `(${a.detail})` : ""}`
    );
    console.log(`rollout ${r?.id ?? "?"}: ${states.join(" ")}; patchErrors ${
      JSON.stringify(input.patchErrors ?? {})
    }`);
    break;
  }
  default:
    console.error(`json.ts: unknown mode ${mode}`);
    Deno.exit(2);
}
EOF
json() { "$DENO" run --quiet --no-prompt --no-config "$JSON_TS" "$@"; }

# mod.ts and its npm dependency must be in Deno's cache: the namespaces cannot
# reach a registry. Best effort (offline with a warm cache is fine).
"$DENO" cache --quiet --config "$REPO/deno.json" "$REPO/mod.ts" "$REPO/codec/hash_worker.ts" \
  >"$TMP/logs/cache.log" 2>&1 || echo "fleet-netns: warning: deno cache failed (see below if the run fails)" >&2
LOGS+=("$TMP/logs/cache.log")
# Type-check json.ts and warm the cache for it too (it has no imports).
echo '{}' | json rollout >/dev/null 2>&1 || true

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
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
}

add_host "$CP_NS" p-cp "$CP_IP"
add_host "$OP_NS" p-op "$OP_IP"
AGENT_NS=()
AGENT_ID=()
AGENT_IP=()
AGENT_REGION=()
for ((i = 0; i < AGENTS; i++)); do
  AGENT_NS+=("$PREFIX-a$i")
  AGENT_REGION+=("r$((i % REGIONS))")
  AGENT_ID+=("$(printf 'r%d-a%02d' $((i % REGIONS)) $((i / REGIONS)))")
  AGENT_IP+=("100.64.0.$((AGENT_IP_BASE + i))")
  add_host "${AGENT_NS[i]}" "p-a$i" "${AGENT_IP[i]}"
done
# ---------------------------------------------------------------- keys
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
say "keys: root and release key pairs and the delegation in $KEYS; agents pin $TRUST/root.pub"

say "$AGENTS agents in $REGIONS regions; namespaces $PREFIX-{br,cp,op,a0..a$((AGENTS - 1))}; bridge br0 in $BR"
say "addresses: control plane $CP_IP, operator $OP_IP, agents ${AGENT_IP[0]}..${AGENT_IP[AGENTS - 1]}"

# ---------------------------------------------------------------- processes
# run_poolboy NS LOG READ WRITE ARGS...: mod.ts in NS, in the background.
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

# The operator's API token: made on the control plane's data dir before it starts, as its
# host's admin would (poolboy token create; role deployer: publish, roll out, read status).
# The operator commands read it from POOLBOY_TOKEN.
mkdir -p "$TMP/cp"
POOLBOY_TOKEN=$("$DENO" run --quiet --no-prompt --config "$REPO/deno.json" \
  --allow-read="$TMP/cp" --allow-write="$TMP/cp" "$REPO/mod.ts" \
  token create --data "$TMP/cp" --role deployer --name operator 2>>"$TMP/logs/keys.log") ||
  fail "poolboy token create failed: $(tail -n 1 "$TMP/logs/keys.log")"
export POOLBOY_TOKEN
say "operator token: deployer \"operator\" made in $TMP/cp (the control plane keeps its hash only)"
# An admin's token, for the devices' enrolment token (issue 14: only enrolled devices take part).
ADMIN_TOKEN=$("$DENO" run --quiet --no-prompt --config "$REPO/deno.json" \
  --allow-read="$TMP/cp" --allow-write="$TMP/cp" "$REPO/mod.ts" \
  token create --data "$TMP/cp" --role admin --name enroller 2>>"$TMP/logs/keys.log") ||
  fail "poolboy token create (admin) failed: $(tail -n 1 "$TMP/logs/keys.log")"

# op ARGS...: an operator command (publish/rollout/status) from the operator namespace,
# with --allow-net=100.64.0.0/10, --allow-env=POOLBOY_TOKEN and nothing else but reading
# the files in $OP_READ.
OP_READ="$TMP/models,$KEYS/release.key,$KEYS/keys.json,$REPO/codec,$REPO/kernel"
op() {
  timeout 30 ip netns exec "$OP_NS" "$DENO" run --quiet --no-prompt --config "$REPO/deno.json" \
    --allow-net=100.64.0.0/10 --allow-read="$OP_READ" --allow-env=POOLBOY_TOKEN \
    "$REPO/mod.ts" "$@"
}
status_json() { op status --control-plane "$CP_URL" --json >"$TMP/status.json" 2>"$TMP/logs/op.log"; }
LOGS+=("$TMP/logs/op.log")

t0=$(now_ms)
run_poolboy "$CP_NS" "$TMP/logs/cp.log" "$TMP/cp,$REPO/codec,$REPO/kernel" "$TMP/cp" \
  controlplane --bind "$CP_IP" --data "$TMP/cp" --agent-timeout 1500ms
CP_PID=${PIDS[-1]}
deadline=$(($(now_ms) + START_TIMEOUT_S * 1000))
until status_json; do
  kill -0 "$CP_PID" 2>/dev/null || fail "the control plane exited: $(tail -n 1 "$TMP/logs/op.log")"
  [ "$(now_ms)" -lt "$deadline" ] ||
    fail "the control plane's API did not answer within ${START_TIMEOUT_S} s: $(tail -n 1 "$TMP/logs/op.log")"
  sleep 0.3
done
say "control plane up in $(secs $(($(now_ms) - t0))) (pid $CP_PID, namespace $CP_NS)"

# Connectivity: every namespace must reach the control plane across the bridge.
if command -v ping >/dev/null 2>&1; then
  for ns in "$OP_NS" "${AGENT_NS[@]}"; do
    ip netns exec "$ns" ping -c 1 -W 2 "$CP_IP" >/dev/null 2>&1 || fail "$ns cannot ping $CP_IP"
  done
  say "connectivity: $((AGENTS + 1)) namespaces ping $CP_IP"
else
  for ns in "${AGENT_NS[@]}"; do
    timeout 5 ip netns exec "$ns" bash -c "exec 3<>/dev/tcp/$CP_IP/7402" 2>/dev/null ||
      fail "$ns cannot open a TCP connection to $CP_IP:7402"
  done
  say "connectivity: no ping here; $AGENTS agent namespaces open TCP to $CP_IP:7402 (operator did too)"
fi

# One enrolment token for every agent (printed once; the control plane keeps its hash).
ENROLL_TOKEN=$(op device enroll-token --control-plane "$CP_URL" --token "$ADMIN_TOKEN" \
  --uses "$AGENTS" --expires 10m --json 2>>"$TMP/logs/op.log" |
  sed -n 's/.*"token": *"\(pbe_[A-Za-z0-9_-]*\)".*/\1/p') ||
  fail "poolboy device enroll-token failed: $(tail -n 1 "$TMP/logs/op.log")"
[ -n "$ENROLL_TOKEN" ] || fail "poolboy device enroll-token printed no token"
say "enrolment token for $AGENTS devices made (admin)"
for ((i = 0; i < AGENTS; i++)); do
  data="$TMP/agents/${AGENT_ID[i]}"
  mkdir -p "$data"
  run_poolboy "${AGENT_NS[i]}" "$TMP/logs/${AGENT_ID[i]}.log" "$data,$TRUST" "$data" \
    agent --control-plane "$CP_IP" --bind "${AGENT_IP[i]}" --node-id "${AGENT_ID[i]}" \
    --region "${AGENT_REGION[i]}" --data "$data" --heartbeat-interval 250ms --transfer-timeout 2s \
    --trust-root "$TRUST/root.pub" --enroll "$ENROLL_TOKEN"
done
deadline=$(($(now_ms) + START_TIMEOUT_S * 1000))
until status_json && online=$(json online "$AGENTS" <"$TMP/status.json"); do
  [ "$(now_ms)" -lt "$deadline" ] ||
    fail "only ${online:-0}/$AGENTS agents online after ${START_TIMEOUT_S} s"
  sleep 0.3
done
say "$AGENTS/$AGENTS agents online in $(secs $(($(now_ms) - t0)))"

# ---------------------------------------------------------------- models
V1="$TMP/models/v1.bin"
V2="$TMP/models/v2.bin"
head -c $((MODEL_MIB * 1024 * 1024)) /dev/urandom >"$V1"
cp "$V1" "$V2"
# 64 KiB rewritten in the middle.
dd if=/dev/urandom of="$V2" bs=32K count=2 seek=$((MODEL_MIB * 16 - 1)) conv=notrunc status=none

# wait_converged DIGEST LABEL: until every agent runs DIGEST (or the timeout).
wait_converged() {
  local digest=$1 label=$2 start deadline progress=""
  start=$(now_ms)
  deadline=$((start + CONVERGE_TIMEOUT_S * 1000))
  while :; do
    if status_json; then
      progress=$(json converged "$MODEL" "$digest" "$AGENTS" <"$TMP/status.json") && break
    fi
    if [ "$(now_ms)" -ge "$deadline" ]; then
      local state="no status"
      [ -s "$TMP/status.json" ] && state=$(json rollout-state <"$TMP/status.json" 2>&1)
      fail "$label: only ${progress:-?} agents converged within ${CONVERGE_TIMEOUT_S} s; $state"
    fi
    sleep 0.25
  done
  CONVERGE_MS=$(($(now_ms) - start))
}

SERVED_BEFORE=0
# release VERSION FILE [BASE_VERSION]: publish, roll out, wait; sets DIGEST, PATCH, CP_SERVED, CONVERGE_MS.
release() {
  local version=$1 file=$2 base=${3:-} out id size served
  out=$(op publish --control-plane "$CP_URL" --model "$MODEL" --version "$version" --json \
    --key "$KEYS/release.key" --keys "$KEYS/keys.json" "$file" \
    2>"$TMP/logs/op.log") || fail "publish $version: $(tail -n 1 "$TMP/logs/op.log")"
  read -r DIGEST size PATCH <<<"$(json publish "$base" <<<"$out")"
  [[ "$DIGEST" =~ ^[0-9a-f]{64}$ ]] || fail "publish $version: unexpected answer: ${out:0:200}"
  out=$(op rollout --control-plane "$CP_URL" --model "$MODEL" --version "$version" --json \
    2>"$TMP/logs/op.log") || fail "rollout $version: $(tail -n 1 "$TMP/logs/op.log")"
  id=$(json rollout <<<"$out")
  wait_converged "$DIGEST" "$version"
  sleep 0.75 # bytes served reach the control plane's report by heartbeat
  status_json || fail "status after $version: $(tail -n 1 "$TMP/logs/op.log")"
  read -r served AGENTS_SERVED <<<"$(json served <"$TMP/status.json")"
  CP_SERVED=$((served - SERVED_BEFORE))
  SERVED_BEFORE=$served
  local what="whole file, $size bytes"
  [ "$PATCH" != "-" ] && what="patch from v1, $PATCH bytes"
  say "$version: blake3 ${DIGEST:0:16}…, rollout $id ($what): $AGENTS/$AGENTS converged in $(secs "$CONVERGE_MS"); control plane served $CP_SERVED bytes"
}

release v1 "$V1"
V1_DIGEST=$DIGEST
V1_SERVED=$CP_SERVED
release v2 "$V2" v1
V2_SERVED=$CP_SERVED
[ "$DIGEST" != "$V1_DIGEST" ] || fail "v1 and v2 have the same digest"

# ---------------------------------------------------------------- verify the files
files=()
for id in "${AGENT_ID[@]}"; do files+=("$TMP/agents/$id/models/$MODEL/current"); done
# hash hashes on a Worker, whose modules (codec/hash_worker.ts, kernel/) need read access too.
hashes=$("$DENO" run --quiet --no-prompt --config "$REPO/deno.json" --allow-read="$TMP/agents,$REPO/codec,$REPO/kernel" \
  "$REPO/mod.ts" hash -q "${files[@]}" 2>"$TMP/logs/hash.log") ||
  { LOGS+=("$TMP/logs/hash.log"); fail "hashing the agents' current files: $(tail -n 1 "$TMP/logs/hash.log")"; }
good=0
while read -r digest path; do
  if [ "$digest" = "$DIGEST" ]; then
    good=$((good + 1))
  else
    say "mismatch: $path has $digest, v2 is $DIGEST"
  fi
done <<<"$hashes"
[ "$good" = "$AGENTS" ] || fail "$good/$AGENTS agents' current files hash to v2's digest"
say "every agent's models/$MODEL/current hashes to v2's digest ${DIGEST:0:16}… ($good/$AGENTS)"

say "ok: $AGENTS/$AGENTS agents in $REGIONS regions converged to v1 then v2 over the bridge; control plane served $((V1_SERVED + V2_SERVED)) bytes (v1 $V1_SERVED, v2 $V2_SERVED), agents served $AGENTS_SERVED bytes to peers; total $(secs $(($(now_ms) - t0)))"
