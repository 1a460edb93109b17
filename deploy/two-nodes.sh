#!/usr/bin/env bash
# Several nodes on one host, step by step: one PostgreSQL database, one
# SoftHSM token directory shared by the nodes (standing in for a network HSM
# cluster), two `inkan serve`, and HAProxy in front of them when it is
# installed (TCP pass-through with the PROXY protocol v2).
#
#   deploy/two-nodes.sh [DIR]           set up in DIR (default var/two-nodes), start, print what to
#                                       open; Ctrl-C stops everything
#   deploy/two-nodes.sh --check [DIR]   the same, then log in with the demo doctor's HPKI card through
#                                       the front door, sign on node A and on node B with that one
#                                       session, verify with openssl, and stop (what the tests run)
#
# Ports (environment): INKAN_RECIPE_PG_PORT (5433), INKAN_RECIPE_A_PORT (8443), INKAN_RECIPE_B_PORT
# (9443), INKAN_RECIPE_LB_PORT (7443); each node's and the balancer's card listener is the port + 1.
# INKAN_BIN: the inkan binary (default target/release/inkan, built if missing).
# Each step prints what it does; every command is one you would type.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

check=0
if [ "${1:-}" = "--check" ]; then check=1; shift; fi
dir=$(realpath -m "${1:-var/two-nodes}")
pg_port=${INKAN_RECIPE_PG_PORT:-5433}
a_port=${INKAN_RECIPE_A_PORT:-8443}
b_port=${INKAN_RECIPE_B_PORT:-9443}
lb_port=${INKAN_RECIPE_LB_PORT:-7443}
inkan=${INKAN_BIN:-$root/target/release/inkan}
step() { printf '\n== %s\n' "$*"; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${pg:-}" ] && [ -d "$pg/data" ]; then
    as_pg "$pg_ctl" -D "$pg/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$pg"
  fi
}
trap cleanup EXIT

if [ ! -x "$inkan" ]; then
  step "building inkan (cargo build --release)"
  cargo build --release --locked
fi
[ -e /usr/lib/softhsm/libsofthsm2.so ] || softhsm/setup.sh --deps-only
if [ -e "$dir" ]; then
  echo "$dir exists: remove it, or give another directory" >&2
  exit 2
fi
mkdir -p "$dir"
chmod 0700 "$dir"

pg=$(mktemp -d "${TMPDIR:-/tmp}/inkan-recipe-pg.XXXXXX")
step "1. PostgreSQL: a cluster of its own in $pg, port $pg_port"
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "no PostgreSQL server: apt-get install -y postgresql" >&2; exit 2; }
pg_ctl=$bin/pg_ctl
# PostgreSQL refuses to run as root: as the package's user then.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "$(id -u)" = 0 ]; then chown postgres: "$pg"; fi
as_pg "$bin/initdb" -D "$pg/data" -U postgres -A trust -E UTF8 --no-locale >/dev/null
cat >> "$pg/data/postgresql.conf" <<EOF
port = $pg_port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$pg'
EOF
# Local administration without a password; the nodes log in with one.
cat > "$pg/data/pg_hba.conf" <<EOF
local all postgres trust
host inkan inkan 127.0.0.1/32 scram-sha-256
EOF
as_pg "$pg_ctl" -D "$pg/data" -l "$pg/log" -w start >/dev/null

step "2. the role and the database"
password=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
psql() { as_pg "$bin/psql" -h "$pg" -p "$pg_port" -U postgres -v ON_ERROR_STOP=1 -q "$@"; }
psql -c "CREATE ROLE inkan LOGIN PASSWORD '$password'"
psql -c "CREATE DATABASE inkan OWNER inkan"
echo "role inkan, database inkan (the password goes to the nodes as INKAN_STORE_PASSWORD)"

step "3. one configuration per node: the same database, token and public URLs; their own ports"
if [ -x /usr/sbin/haproxy ]; then public=$lb_port; else public=$a_port; fi
for node in a b; do
  port=$a_port; [ $node = b ] && port=$b_port
  mkdir -p -m 0700 "$dir/node-$node"
  cat > "$dir/node-$node/inkan.toml" <<EOF
# node $node of two (deploy/two-nodes.sh)
data_dir = "."

[token]
# One token for both nodes (a network HSM in production): SoftHSM's
# directory, its configuration and the lock that orders writers.
softhsm_conf = "../token/softhsm2.conf"

[store]
url = "postgres://inkan@127.0.0.1:$pg_port/inkan"

[server]
listen = "127.0.0.1:$port"
card_listen = "127.0.0.1:$((port + 1))"
public_url = "https://localhost:$public"
card_url = "https://localhost:$((public + 1))"
$( if [ -x /usr/sbin/haproxy ]; then echo 'proxy_from = ["127.0.0.2"]'; fi )
# The TLS certificate and the PKI: the embedded defaults (the fixture PKI,
# relative to the project root, where the nodes start); yours in production.
EOF
done
mkdir -p "$dir/token"
chmod 0700 "$dir/token"
# The PINs and the database password: in the environment, never in the files.
export INKAN_STORE_PASSWORD=$password
export INKAN_TOKEN_USER_PIN=$(head -c 12 /dev/urandom | od -An -tu1 | tr -d ' \n' | head -c 12)
export INKAN_TOKEN_SO_PIN=$(head -c 12 /dev/urandom | od -An -tu1 | tr -d ' \n' | head -c 12)
export INKAN_LOG=${INKAN_LOG:-warn}
"$inkan" --config "$dir/node-a/inkan.toml" config check >/dev/null

step "4. the token and the schema, once (inkan init)"
"$inkan" --config "$dir/node-a/inkan.toml" init

step "5. node A (demo users, cards and client) on $a_port, node B on $b_port"
"$inkan" --config "$dir/node-a/inkan.toml" serve --demo > "$dir/node-a/out" 2> "$dir/node-a/log" &
pids+=($!)
wait_for() {
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1: see $dir/node-*/log" >&2
  for log in "$dir"/node-*/log; do echo "--- $log" >&2; tail -n 20 "$log" >&2; done
  exit 1
}
wait_for "$a_port"
for _ in $(seq 1 100); do grep -q client_secret "$dir/node-a/out" && break; sleep 0.1; done
"$inkan" --config "$dir/node-b/inkan.toml" serve > "$dir/node-b/out" 2> "$dir/node-b/log" &
pids+=($!)
wait_for "$b_port"
secret=$(sed -n 's/.*client_id=demo client_secret=\([^ ]*\).*/\1/p' "$dir/node-a/out")
[ -n "$secret" ] || { echo "node A printed no demo client: see $dir/node-a/out" >&2; exit 1; }

if [ -x /usr/sbin/haproxy ]; then
  step "6. HAProxy on $lb_port (and $((lb_port + 1)) for cards) in front of both, PROXY v2"
  cat > "$dir/haproxy.cfg" <<EOF
global
    maxconn 256
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend main
    bind 127.0.0.1:$lb_port
    default_backend nodes
frontend cards
    bind 127.0.0.1:$((lb_port + 1))
    default_backend cards
backend nodes
    balance roundrobin
    server a 127.0.0.1:$a_port send-proxy-v2 source 127.0.0.2
    server b 127.0.0.1:$b_port send-proxy-v2 source 127.0.0.2
backend cards
    balance roundrobin
    server a 127.0.0.1:$((a_port + 1)) send-proxy-v2 source 127.0.0.2
    server b 127.0.0.1:$((b_port + 1)) send-proxy-v2 source 127.0.0.2
EOF
  /usr/sbin/haproxy -f "$dir/haproxy.cfg" -db > "$dir/haproxy.log" 2>&1 &
  pids+=($!)
  wait_for "$lb_port"
else
  step "6. no HAProxy installed: node A's URLs are the public ones (apt-get install -y haproxy for a balancer)"
fi

cat <<EOF

Two nodes are running, on one database and one token:
  front door    https://localhost:$public   (cards: https://localhost:$((public + 1)))
  node A        https://localhost:$a_port
  node B        https://localhost:$b_port
  demo client   client_id=demo client_secret=$secret
  configuration $dir/node-a/inkan.toml, $dir/node-b/inkan.toml (secrets in the environment)
EOF

if [ $check = 0 ]; then
  echo "Ctrl-C stops them."
  wait
  exit 0
fi

step "check: a card login through the front door, then the same session signs on A and on B"
CURL="curl -sS --fail-with-body --cacert $root/fixtures/pki/hpki-root.pem"
CB=https://localhost:$public/demo/callback
VERIFIER=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
CHALLENGE=$(printf %s "$VERIFIER" | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '=')
LOGIN=$($CURL -o /dev/null -w '%{redirect_url}' \
  "https://localhost:$public/oidc/authorize?response_type=code&client_id=demo&redirect_uri=$CB&scope=openid%20sign&state=s1&nonce=n1&code_challenge=$CHALLENGE&code_challenge_method=S256&acr_values=hpki")
BACK=$($CURL --cert "$root/fixtures/pki/holders/hpki-doctor.pem" --key "$root/fixtures/pki/holders/hpki-doctor.key" \
  -o /dev/null -w '%{redirect_url}' "$LOGIN")
CODE=$(echo "$BACK" | sed 's/.*code=\([^&]*\).*/\1/')
$CURL -u "demo:$secret" -d grant_type=authorization_code -d code="$CODE" -d redirect_uri="$CB" \
  -d code_verifier="$VERIFIER" -o "$dir/token.json" "https://localhost:$public/oidc/token"
TOKEN=$(sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' "$dir/token.json")
echo "Rp.1 two nodes" > "$dir/rx.txt"
for node in "$a_port" "$b_port"; do
  # Straight to each node (from 127.0.0.1, not the balancer's 127.0.0.2).
  $CURL -H "Authorization: Bearer $TOKEN" --data-binary @"$dir/rx.txt" -o "$dir/rx-$node.p7s" \
    "https://localhost:$node/api/v1/sign"
  openssl cms -verify -binary -inform DER -in "$dir/rx-$node.p7s" -content "$dir/rx.txt" \
    -CAfile <(cat "$root/fixtures/pki/hpki-root.pem" "$root/fixtures/pki/hpki-signing-ca.pem") -purpose any \
    -out /dev/null 2>/dev/null
  echo "signed on the node at port $node, openssl cms -verify: ok"
done
"$inkan" --config "$dir/node-b/inkan.toml" audit verify
echo "check passed"
