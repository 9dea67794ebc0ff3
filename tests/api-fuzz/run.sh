#!/usr/bin/env bash
# Fuzzes the API of a real node with Schemathesis, driven by the OpenAPI document the node serves.
#
#   bash tests/api-fuzz/run.sh            # NEVERUST_API_FUZZ_EXAMPLES=20 examples per operation
#
# Installs Schemathesis (pinned) into a virtualenv under the build directory, builds and starts
# a node on a free port with a fresh data directory and an access token, runs every check
# against it (the token sent with each request; the ignored_auth check leaves it out and must
# be refused), and stops it.
set -euo pipefail
cd "$(dirname "$0")/../.."

examples="${NEVERUST_API_FUZZ_EXAMPLES:-20}"
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
venv="$target/api-fuzz-venv"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check schemathesis==4.32.5
fi

cargo build --locked --quiet -p neverust --bin neverust
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$target/debug/neverust" start --data-dir "$work/data" --api-port "$port" --storage-quota 1GiB \
  --listen-addrs /ip4/127.0.0.1/tcp/0 --log-format plain --api-token-file "$work/api.token" > "$work/node.log" 2>&1 &
node=$!
trap 'kill $node 2>/dev/null; wait $node 2>/dev/null; rm -rf "$work"' EXIT
base="http://127.0.0.1:$port"
python3 - "$base/health" <<'PY'
import sys, time, urllib.request
for _ in range(200):
    try:
        urllib.request.urlopen(sys.argv[1], timeout=1)
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("the node did not start")
PY
token=$(cat "$work/api.token")
cd tests/api-fuzz # schemathesis.toml
"$venv/bin/schemathesis" run "$base/api/archivist/v1/openapi.yaml" --url "$base" \
  --max-examples "$examples" --seed 1 --no-color --header "Authorization: Bearer $token" \
  || { echo "node log:"; tail -50 "$work/node.log"; exit 1; }
