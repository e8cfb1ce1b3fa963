#!/usr/bin/env bash
# A local highly available 3AM with local binaries, for machines without Docker
# (`npm run cluster:local -- start|stop|status`):
#   - a three-master Redis Cluster (redis-server --cluster-enabled yes, AOF fsynced on every write)
#     on ports 7001-7003, joined by redis-cli --cluster create;
#   - three API processes on 4001-4003 against it (REDIS_CLUSTER_NODES). CLUSTER_MODE=spread (the
#     default): they divide the ledger's shards between them (LEDGER_SPREAD=true), each forwarding
#     what belongs to another's shards, and the survivors take a dead one's shards.
#     CLUSTER_MODE=standby: the first owns every shard, the other two are hot standbys
#     (LEDGER_STANDBY=true) that take over when it dies. Each runs the workers in-process
#     (RUN_WORKERS);
#   - HAProxy on 8080 (when installed: Debian's haproxy), sending traffic to whichever process
#     answers /readyz (src/ops/ha/haproxy.cfg).
# Postgres is the machine's (DATABASE_URL, default a database of its own). Everything it starts
# is stopped by pid (`stop`); data and logs are in CLUSTER_DIR (default /tmp/threeam-cluster).
set -euo pipefail
cd "$(dirname "$0")/../../.."

DIR="${CLUSTER_DIR:-/tmp/threeam-cluster}"
REDIS_PORTS=(7001 7002 7003)
API_PORTS=(4001 4002 4003)
LB_PORT="${LB_PORT:-8080}"
MODE="${CLUSTER_MODE:-spread}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/threeam_cluster}"

up() { curl -fsS -o /dev/null "$1" 2>/dev/null; }

start() {
  mkdir -p "$DIR"
  for p in "${REDIS_PORTS[@]}"; do
    mkdir -p "$DIR/redis-$p"
    redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes --appendonly yes \
      --appendfsync always --save "" --dir "$DIR/redis-$p" --daemonize yes \
      --pidfile "$DIR/redis-$p.pid" --logfile "$DIR/redis-$p.log"
  done
  for p in "${REDIS_PORTS[@]}"; do
    for _ in $(seq 1 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  if ! redis-cli -p "${REDIS_PORTS[0]}" cluster info | grep -q "cluster_state:ok"; then
    # A new cluster (a restarted one keeps its slot map in nodes.conf).
    redis-cli --cluster create $(printf "127.0.0.1:%s " "${REDIS_PORTS[@]}") \
      --cluster-replicas 0 --cluster-yes >"$DIR/cluster-create.log"
  fi
  for _ in $(seq 1 100); do
    redis-cli -p "${REDIS_PORTS[0]}" cluster info | grep -q "cluster_state:ok" && break
    sleep 0.1
  done
  export REDIS_CLUSTER_NODES
  REDIS_CLUSTER_NODES="$(printf "127.0.0.1:%s," "${REDIS_PORTS[@]}" | sed 's/,$//')"

  # The processes' shared secret for their internal calls (spread), kept with the cluster's data.
  [ -f "$DIR/internal-token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/internal-token"
  for i in "${!API_PORTS[@]}"; do
    local standby=false spread=true
    if [ "$MODE" = standby ]; then
      spread=false
      [ "$i" -gt 0 ] && standby=true
    fi
    # Spread, all three run at once: the first runs the Stripe stand-in, the others use it (one
    # Stripe for the deployment, its webhooks to the first, which forwards deposits to their
    # owners). The Wise and Airwallex stand-ins are each process's own, on free ports.
    local stripe=()
    if [ "$spread" = true ] && [ "$i" -gt 0 ]; then
      stripe=(STRIPE_SECRET_KEY=sk_test_local_standin STRIPE_API_URL=http://127.0.0.1:12111)
    fi
    env PORT="${API_PORTS[$i]}" HOST=127.0.0.1 LEDGER_STANDBY="$standby" LEDGER_SPREAD="$spread" \
      INTERNAL_TOKEN="$(cat "$DIR/internal-token")" INTERNAL_URL="http://127.0.0.1:${API_PORTS[$i]}" \
      STRIPE_WEBHOOK_SECRET="whsec_$(cat "$DIR/internal-token")" "${stripe[@]}" \
      nohup node --import tsx src/main/main.ts >"$DIR/api-$((i + 1)).log" 2>&1 &
    echo $! >"$DIR/api-$((i + 1)).pid"
    # The first one ready before the others start (standby: they find its leases taken and wait;
    # spread: it creates the database and migrates once).
    if [ "$i" -eq 0 ]; then
      for _ in $(seq 1 300); do up "http://127.0.0.1:${API_PORTS[0]}/readyz" && break; sleep 0.2; done
      up "http://127.0.0.1:${API_PORTS[0]}/readyz" || { echo "api-1 did not get ready; see $DIR/api-1.log"; exit 1; }
    fi
  done

  if command -v haproxy >/dev/null 2>&1; then
    LB_BIND="127.0.0.1:$LB_PORT" API1_ADDR="127.0.0.1:${API_PORTS[0]}" \
      API2_ADDR="127.0.0.1:${API_PORTS[1]}" API3_ADDR="127.0.0.1:${API_PORTS[2]}" \
      haproxy -D -p "$DIR/haproxy.pid" -f src/ops/ha/haproxy.cfg
    for _ in $(seq 1 50); do up "http://127.0.0.1:$LB_PORT/readyz" && break; sleep 0.2; done
    echo "3AM ($MODE) on http://127.0.0.1:$LB_PORT (HAProxy -> api ${API_PORTS[*]}); Redis Cluster $REDIS_CLUSTER_NODES"
  else
    echo "3AM ($MODE) on http://127.0.0.1:${API_PORTS[*]} (install haproxy for one address in front); Redis Cluster $REDIS_CLUSTER_NODES"
  fi
  echo "logs and data: $DIR; stop with: npm run cluster:local -- stop"
}

stop() {
  for f in "$DIR"/haproxy.pid "$DIR"/api-*.pid "$DIR"/redis-*.pid; do
    [ -f "$f" ] || continue
    pid="$(cat "$f")"
    # SIGTERM: the API drains its WAL into Postgres; Redis has everything in its AOF anyway.
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$f"
  done
  echo "stopped (data kept in $DIR; remove it for a fresh cluster)"
}

status() {
  for i in "${!API_PORTS[@]}"; do
    local p="${API_PORTS[$i]}"
    if up "http://127.0.0.1:$p/readyz"; then
      echo "api-$((i + 1)) :$p ready, owns $(curl -fsS "http://127.0.0.1:$p/readyz" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).ledger.shards_owned.length+" shards"))')"
    elif [ -f "$DIR/api-$((i + 1)).pid" ] && kill -0 "$(cat "$DIR/api-$((i + 1)).pid")" 2>/dev/null; then
      echo "api-$((i + 1)) :$p standby (waiting for the shard leases)"
    else
      echo "api-$((i + 1)) :$p not running"
    fi
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status"; exit 2 ;;
esac
