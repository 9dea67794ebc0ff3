#!/usr/bin/env bash
# The Grafana dashboard against real Prometheus scraping real nodes: every query of
# docker/grafana/dashboards/neverust.json must return data.
#
#   bash tests/monitoring/run.sh       # NEVERUST_BIN=path/to/neverust to test another binary
#
# Uses the release binary ($NEVERUST_BIN, else ${CARGO_TARGET_DIR:-target}/release/neverust; it
# does not build it), Debian's prometheus package (installed with apt-get when /usr/bin/prometheus
# is missing) and Anvil from contracts/node_modules (npm ci when missing). In a temporary
# directory, removed on exit, it starts on free loopback ports:
#
#   - a cluster (no chain): an uploader and four peers, fast repair checks; an upload, a download,
#     an upload cut off mid-way, a protect (K=2, M=1) that places three slots on three peers,
#     the holder of a data slot killed, a download from the network that rebuilds its blocks,
#     and the lost slot repaired onto the fourth peer; a fifth peer stopped (SIGSTOP) mid-transfer,
#     so that the uploader's wants wait for the exchange's timeout;
#   - a chain: Anvil mined 6x faster than the clock, the contracts deployed with a development
#     proving key and 60 s proof periods; a client, three hosts and a validator in market mode; a
#     storage request (3 slots) filled and proven; one host stopped (SIGSTOP) until the validator
#     marks a proof of its missing, then resumed (it sees the slash); the request finished and
#     the hosts paid out;
#   - Prometheus scraping every node every second.
#
# Then every `expr` of the dashboard, with $instance and $__rate_interval replaced, is sent to
# Prometheus' /api/v1/query. A query passes when it returns a finite value and, at some point of
# the run, a non-zero one (counters moved, gauges were set). A few metrics cannot move in a
# test this small (NOT_EXERCISED below says why): for those only "returns data" is required and
# they are listed as not exercised. The last line is "N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
began=$(date +%s)
LIMIT=${NEVERUST_MONITORING_LIMIT:-420} # seconds for the whole run

# Metrics no small test makes move, and why. Keyed by metric name (as in the queries).
declare -A NOT_EXERCISED=(
  [market_slots_restored_total]="needs a sold slot whose stored data stops proving (corruption on disk)"
  [repairs_failed_total]="needs a new host that refuses or times out a slot hand-over"
)

bin=${NEVERUST_BIN:-${CARGO_TARGET_DIR:-target}/release/neverust}
[ -x "$bin" ] || { echo "no node binary at $bin: cargo build --release --locked -p neverust, or set NEVERUST_BIN"; exit 1; }
bin=$(realpath "$bin")
dashboard=$root/docker/grafana/dashboards/neverust.json

if [ ! -x /usr/bin/prometheus ]; then
  echo "installing Debian's prometheus package"
  apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
  apt_install || { apt-get update -q >/dev/null && apt_install; }
fi
find_anvil() { ls "$root"/contracts/node_modules/@foundry-rs/anvil-linux-*/bin/anvil 2>/dev/null | head -1; }
[ -n "$(find_anvil)" ] || npm ci --prefix contracts --no-audit --no-fund >/dev/null
anvil=$(find_anvil)
[ -x "$anvil" ] || { echo "no Anvil under contracts/node_modules after npm ci"; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  local code=$?
  set +e
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$code" -ne 0 ] && [ -d "$work" ]; then
    for f in "$work"/*.log; do [ -f "$f" ] && { echo "==== $(basename "$f") (last 15 lines)"; tail -15 "$f"; }; done
  fi
  rm -rf "$work"
  exit "$code"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
( trap 'kill $s 2>/dev/null; exit 0' TERM; sleep "$LIMIT" & s=$!; wait $s
  echo "TIMEOUT: the run took more than $LIMIT s"; kill -TERM $$ ) 2>/dev/null &
watchdog=$!
pids+=("$watchdog")

say() { printf '[%3ds] %s\n' "$(( $(date +%s) - began ))" "$*"; }
die() { say "FAIL: $*"; exit 1; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wait_for SECONDS WHAT COMMAND...: runs COMMAND every 0.25 s until it succeeds.
wait_for() {
  local limit=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out after $limit s waiting for $what"
    sleep 0.25
  done
}
api() { echo "http://127.0.0.1:${port[$1]}/api/archivist/v1"; }
# metric NODE NAME: the value of an unlabelled sample (0 when absent).
metric() {
  curl -fsS --max-time 5 "http://127.0.0.1:${port[$1]}/metrics" |
    awk -v n="$2" '$1 == n { v = $2 } END { print (v == "" ? 0 : v) }'
}
metric_above() { python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)' "$(metric "$1" "$2")" "$3"; }
json_field() { python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1], {"d": d}))' "$1"; }

declare -A port pid
# start NAME EXTRA_ARGS...: a node on free ports, its data under $work/NAME.
start() {
  local name=$1; shift
  port[$name]=$(free_port)
  "$bin" start --data-dir "$work/$name" --api-port "${port[$name]}" \
    --listen-addrs "/ip4/127.0.0.1/tcp/$(free_port)" --log-format plain "$@" > "$work/$name.log" 2>&1 &
  pid[$name]=$!
  pids+=("$!")
}
healthy() { curl -fs --max-time 2 "http://127.0.0.1:${port[$1]}/health"; }
address() { # a node's loopback multiaddr with its peer id
  curl -fsS --max-time 5 "$(api "$1")/debug/info" |
    json_field '[a if "/p2p/" in a else a + "/p2p/" + d["id"] for a in d["addrs"] if a.startswith("/ip4/127.0.0.1/tcp/")][0]'
}

# ---- the chain: Anvil, mined 6x faster than the clock, with the contracts deployed
anvil_port=$(free_port)
"$anvil" --host 127.0.0.1 --port "$anvil_port" --no-mining > "$work/anvil.log" 2>&1 &
pids+=("$!")
rpc="http://127.0.0.1:$anvil_port"
rpc_up() { curl -fs --max-time 2 -H 'content-type: application/json' -d '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' "$rpc"; }
wait_for 20 "Anvil" rpc_up
cat > "$work/miner.py" <<'PY'
# A block every 0.5 s, 3 s of chain time after the last: the chain runs 6x faster than the clock.
import json, sys, time, urllib.request
def call(method, params):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(sys.argv[1], body, {"content-type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=10))["result"]
while True:
    head = call("eth_getBlockByNumber", ["latest", False])
    call("evm_mine", [int(head["timestamp"], 16) + 3])
    time.sleep(0.5)
PY
python3 "$work/miner.py" "$rpc" > "$work/miner.log" 2>&1 &
pids+=("$!")
# Anvil's well-known development accounts (public keys: for a local chain only).
mapfile -t keys < <(sed -n '/^Private Keys/,/^Wallet/p' "$work/anvil.log" | grep -o '0x[0-9a-f]\{64\}')
mapfile -t accounts < <(sed -n '/^Available Accounts/,/^Private Keys/p' "$work/anvil.log" | grep -o '0x[0-9a-fA-F]\{40\}')
[ "${#keys[@]}" -ge 6 ] && [ "${#accounts[@]}" -ge 6 ] || die "no development accounts in Anvil's output"
"$bin" proving-key --samples 1 --seed 7 -o "$work/proving.key" > "$work/proving-key.log" 2>&1 || die "proving-key failed"
"$bin" deploy --eth-provider "$rpc" -o "$work/deployment.json" --proving-key "$work/proving.key" \
  --proof-period 60 --proof-timeout 30 \
  --fund "${accounts[1]}" --fund "${accounts[2]}" --fund "${accounts[3]}" --fund "${accounts[4]}" --fund "${accounts[5]}" \
  > "$work/deploy.log" 2>&1 || die "neverust deploy failed"
say "contracts deployed on Anvil"

market_node() { # NAME ACCOUNT_INDEX EXTRA_ARGS...
  local name=$1 index=$2; shift 2
  printf '%s\n' "${keys[$index]}" > "$work/$name.eth.key"
  chmod 600 "$work/$name.eth.key"
  start "$name" --eth-provider "ws://127.0.0.1:$anvil_port" --deployment "$work/deployment.json" \
    --eth-private-key "$work/$name.eth.key" "$@"
}
market_node client 1
wait_for 60 "the client" healthy client
client_addr=$(address client)
for h in 1 2 3; do market_node "host$h" $((h + 1)) --proving-key "$work/proving.key" --bootstrap-node "$client_addr"; done
market_node validator 5 --validator --bootstrap-node "$client_addr"

# ---- the cluster: an uploader and four peers, repair checks every 2 s, repair after 3 s
fast=(--repair-check-interval 2 --repair-after 3)
start uploader "${fast[@]}"
wait_for 30 "the uploader" healthy uploader
uploader_addr=$(address uploader)
for p in 1 2 3 4; do start "peer$p" "${fast[@]}" --bootstrap-node "$uploader_addr"; done
start silent # joins later: a peer that stops answering
nodes=(client host1 host2 host3 validator uploader peer1 peer2 peer3 peer4 silent)
for n in "${nodes[@]}"; do wait_for 60 "node $n" healthy "$n"; done
say "eleven nodes up"

# ---- Prometheus, scraping every node every second
prom_port=$(free_port)
{
  echo "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}"
  echo "scrape_configs:"
  echo "  - job_name: neverust"
  echo "    static_configs:"
  for n in "${nodes[@]}"; do
    echo "      - targets: ['127.0.0.1:${port[$n]}']"
    echo "        labels: {node: $n}"
  done
} > "$work/prometheus.yml"
promtool check config "$work/prometheus.yml" > /dev/null || die "generated Prometheus config is invalid"
/usr/bin/prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" > "$work/prometheus.log" 2>&1 &
pids+=("$!")
prom="http://127.0.0.1:$prom_port"
prom_up() { curl -fs --max-time 2 "$prom/-/ready"; }
wait_for 60 "Prometheus" prom_up
all_scraped() {
  curl -fsS --max-time 5 "$prom/api/v1/query" --data-urlencode 'query=sum(up{job="neverust"})' |
    json_field 'int(float(d["data"]["result"][0]["value"][1])) if d["data"]["result"] else 0' | grep -qx "${#nodes[@]}"
}
wait_for 30 "Prometheus scraping all eleven nodes" all_scraped
say "Prometheus scraping"

# ---- the market: hosts offer space, the client requests storage for a file
for h in 1 2 3; do
  curl -fsS --max-time 10 -X POST "$(api "host$h")/sales/availability" -H 'content-type: application/json' \
    -d '{"totalSize": 8388608, "maximumDuration": 3600, "minimumPricePerBytePerSecond": "1", "maximumCollateralPerByte": "100"}' > /dev/null
done
head -c 300000 /dev/urandom > "$work/market.bin"
market_cid=$(curl -fsS --max-time 30 -X POST --data-binary @"$work/market.bin" "$(api client)/data")
request=$(curl -fsS --max-time 60 -X POST "$(api client)/storage/request/$market_cid" -H 'content-type: application/json' \
  -d '{"duration": 360, "pricePerBytePerSecond": "1", "proofProbability": "1", "collateralPerByte": "1", "expiry": 120, "nodes": 3, "tolerance": 1}')
say "storage request $request submitted"

# ---- the cluster's traffic
peers_connected() { [ "$(metric uploader peer_count)" -ge 4 ]; }
wait_for 30 "four peers connected to the uploader" peers_connected
head -c $((1024 * 1024 + 12345)) /dev/urandom > "$work/data.bin"
cid=$(curl -fsS --max-time 30 -X POST -H 'Content-Disposition: attachment; filename="data.bin"' --data-binary @"$work/data.bin" "$(api uploader)/data")
curl -fsS --max-time 30 "$(api uploader)/data/$cid" -o "$work/copy.bin"
cmp -s "$work/data.bin" "$work/copy.bin" || die "the download differs from the upload"
curl -fsS --max-time 30 "$(api uploader)/data" > /dev/null
curl -fsS --max-time 30 "$(api uploader)/space" > /dev/null
curl -s --max-time 30 -o /dev/null "$(api uploader)/data/zDvZRwzm5S5sm5LRrGokpxYcRXVU4Pt9FTmktKFzpDUFkTzxMnTB" || true # a 404
# An upload cut off by its client half-way: rolled back (uploads_failed).
head -c $((8 * 1024 * 1024)) /dev/urandom > "$work/big.bin"
curl -s --max-time 1 --limit-rate 512K -X POST --data-binary @"$work/big.bin" "$(api uploader)/data" > /dev/null 2>&1 || true
upload_failed() { metric_above uploader uploads_failed_total 0; }
wait_for 30 "the cut-off upload rolled back" upload_failed
protected=$(curl -fsS --max-time 60 -X POST "$(api uploader)/data/$cid/protect?k=2&m=1" | json_field 'd["cid"]')
# slots_of NODE: the slots of the protected dataset NODE holds, one per line.
slots_of() {
  curl -fsS --max-time 5 "$(api "$1")/slots" |
    json_field '"\n".join(str(s["slot"]) for s in d["slots"] if s["manifest"] == "'"$protected"'")'
}
placed() { [ "$(for p in 1 2 3 4; do slots_of "peer$p"; done | grep -c .)" -eq 3 ]; }
wait_for 60 "three slots placed on three peers" placed
say "dataset protected, slots placed"
data_holder=""
for p in 1 2 3 4; do [ "$(slots_of "peer$p")" = 0 ] && data_holder=peer$p; done
[ -n "$data_holder" ] || die "no peer holds slot 0"
spare=""
for p in 1 2 3 4; do [ -z "$(slots_of "peer$p")" ] && spare=peer$p; done
# The uploader drops its copies, then the holder of data slot 0 dies: a download from the
# network must rebuild slot 0's blocks from the other two slots.
curl -fsS --max-time 10 -X DELETE "$(api uploader)/data/$protected"
curl -fsS --max-time 10 -X DELETE "$(api uploader)/data/$cid"
kill -9 "${pid[$data_holder]}"
wait "${pid[$data_holder]}" 2>/dev/null || true
curl -fsS --max-time 120 "$(api uploader)/data/$protected/network/stream" -o "$work/rebuilt.bin"
cmp -s "$work/data.bin" "$work/rebuilt.bin" || die "the download from the network differs from the upload"
recovered() { metric_above uploader blocks_recovered_total 0; }
wait_for 10 "blocks rebuilt by the uploader" recovered
# The fetched copy is committed just after the last byte: drop it, so that the repair must
# rebuild slot 0 from the other two slots (repair_bytes) rather than copy it.
listed() { curl -fsS --max-time 5 "$(api uploader)/data" | grep -q "$protected"; }
wait_for 20 "the downloaded copy listed" listed
curl -fsS --max-time 10 -X DELETE "$(api uploader)/data/$protected"
repaired() { [ "$(slots_of "$spare")" = 0 ]; }
wait_for 90 "slot 0 repaired onto $spare" repaired
say "$data_holder killed; the download rebuilt its blocks; slot 0 repaired onto $spare"
# A peer that stops answering mid-transfer (SIGSTOP: still connected, silent): the uploader's
# wants wait for the exchange's timeout (want_list_size, a timed-out peer scored down).
silent_addr=$(address silent)
curl -fsS --max-time 10 "$(api uploader)/connect/${silent_addr##*/p2p/}?addrs=${silent_addr%%/p2p/*}" > /dev/null
frozen=""
for attempt in 1 2 3; do
  head -c $((16 * 1024 * 1024)) /dev/urandom > "$work/silent.bin"
  silent_cid=$(curl -fsS --max-time 30 -X POST --data-binary @"$work/silent.bin" "$(api silent)/data")
  found() { curl -fs --max-time 5 "$(api uploader)/data/$silent_cid/network/manifest"; }
  wait_for 30 "the uploader finding the silent peer's dataset" found
  curl -s --max-time 60 -X POST "$(api uploader)/data/$silent_cid/network" > /dev/null 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 500); do
    if [ "$(metric uploader want_list_size)" != 0 ]; then kill -STOP "${pid[silent]}"; frozen=yes; break; fi
  done
  [ -n "$frozen" ] && break
  say "the transfer finished before the silent peer could be stopped (attempt $attempt)"
done
[ -n "$frozen" ] || die "could not stop the silent peer mid-transfer"
sleep 2.5 # scraped while wanting
wanting() { metric_above uploader want_list_size 0; }
wanting || die "the uploader's want list emptied while its only provider was stopped"
kill -CONT "${pid[silent]}"
say "blocks wanted from a silent peer"

# ---- the market: a host dies, the validator marks its missed proofs; the request runs its
# whole duration and the two other hosts are paid
purchase_state() { curl -fsS --max-time 5 "$(api client)/storage/purchases/$request" | json_field 'd["state"]'; }
started() { case "$(purchase_state)" in started | finished) true ;; *) false ;; esac; }
wait_for 120 "the storage request to start" started
proving() { metric_above host3 market_proofs_submitted_total 0; }
wait_for 60 "host3 proving" proving
# host3 stops (SIGSTOP) until the validator marks a proof of its missing, then resumes before
# a second mark frees its slot: it finds the mark on chain (market_proofs_missed_total).
kill -STOP "${pid[host3]}"
marked() { metric_above validator market_proofs_marked_missing_total 0; }
wait_for 90 "the validator marking host3's missed proof" marked
kill -CONT "${pid[host3]}"
slashed() { metric_above host3 market_proofs_missed_total 0; }
wait_for 60 "host3 seeing its missed proof" slashed
say "host3 stopped; the validator marked its missed proof; host3 resumed and saw it"
finished() { [ "$(purchase_state)" = finished ]; }
wait_for 150 "the storage request to finish" finished
paid() { metric_above host1 market_payouts_total 0 && metric_above host2 market_payouts_total 0; }
wait_for 60 "payouts to host1 and host2" paid
say "storage request finished, hosts paid"
# peer_score is sampled every 30 s by connected nodes: wait for a sample on both sides.
scored() { metric_above uploader peer_score_count 0 && metric_above host1 peer_score_count 0; }
wait_for 60 "peer scores sampled" scored
sleep 3 # a few more scrapes

# ---- every query of the dashboard
window="$(( $(date +%s) - began + 60 ))s"
not_exercised=$(for k in "${!NOT_EXERCISED[@]}"; do printf '%s\t%s\n' "$k" "${NOT_EXERCISED[$k]}"; done)
python3 - "$dashboard" "$prom" "$window" "$not_exercised" <<'PY'
import json, math, re, sys, urllib.parse, urllib.request
dashboard, prom, window, listed = sys.argv[1:5]
not_exercised = dict(line.split("\t", 1) for line in listed.splitlines() if line)

exprs = []
def walk(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if k == "expr" and isinstance(v, str):
                exprs.append(v)
            else:
                walk(v)
    elif isinstance(o, list):
        for x in o:
            walk(x)
walk(json.load(open(dashboard)))

def concrete(e):
    # Grafana's variables: every node, and a window covering the whole run.
    e = e.replace("$__rate_interval", window).replace("$__interval", "1s").replace("$__range", window)
    return re.sub(r"\$\{?instance\}?", ".+", e)

def query(q):
    url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
    answer = json.load(urllib.request.urlopen(url, timeout=30))
    if answer.get("status") != "success":
        raise RuntimeError(answer)
    return [float(r["value"][1]) for r in answer["data"]["result"]]

passed = failed = 0
for e in exprs:
    q = concrete(e)
    reasons = [why for metric, why in not_exercised.items() if re.search(rf"\b{metric}\b", q)]
    try:
        now = [v for v in query(q) if math.isfinite(v)]
        # Non-zero at some point of the run (gauges that went back to zero, counters that moved).
        ever = [v for v in query(f"max_over_time((abs({q}))[{window}:1s])") if math.isfinite(v) and v != 0]
    except Exception as err:
        print(f"FAIL  {e}\n      query error: {err}")
        failed += 1
        continue
    if not now:
        print(f"FAIL  {e}\n      no data")
        failed += 1
    elif not ever and reasons:
        print(f"ok    {e}\n      returns data; not exercised: {reasons[0]}")
        passed += 1
    elif not ever:
        print(f"FAIL  {e}\n      returns only zeros: the run never moved it")
        failed += 1
    else:
        note = "  (listed as not exercised, but it moved: update NOT_EXERCISED)" if reasons else ""
        print(f"ok    {e}{note}")
        passed += 1
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
