#!/usr/bin/env bash
# Prepares this machine and project for inkan; idempotent.
#
#  1. Installs what is missing on Debian: SoftHSM (softhsm2) and OpenSSL; with
#     --deps-only also what the test suite uses: PyJWT (pip) as a stock OIDC
#     client, xmlsec1 (Debian) and signxml (pip) as XAdES verifiers nobody
#     here wrote, certomancer (pip: the tests' time-stamp authority) and
#     pyHanko (pip: a CAdES validator), openapi-spec-validator (pip: checks
#     the OpenAPI document), curl, and Chromium (Debian's package,
#     never a downloaded browser) with
#     Node.js and playwright-core (tests/browser, pinned by its package-lock.json),
#     and Debian's PostgreSQL server (the tests start throwaway clusters of
#     their own in temp directories; nothing is started here), and HAProxy
#     (a real balancer speaking the PROXY protocol; the tests start it).
#  2. Renders softhsm/softhsm2.conf.in into var/softhsm/softhsm2.conf, with the
#     token directory var/softhsm/tokens inside the project.
#  3. Initialises the token by its label (default "inkan", INKAN_TOKEN_LABEL)
#     unless a token with that label exists. PINs come from INKAN_TOKEN_SO_PIN /
#     INKAN_TOKEN_USER_PIN, else from var/token-pins.toml, else new random PINs
#     are written there (mode 0600). Slots are never addressed by number:
#     SoftHSM renumbers them when a token is initialised (--free picks a free one).
#
# Usage: softhsm/setup.sh [--deps-only]
#   --deps-only   only step 1 (the test suite makes its own tokens in temp dirs)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
module=${INKAN_TOKEN_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

need=()
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ "${1:-}" = "--deps-only" ]; then
  command -v python3 >/dev/null 2>&1 || need+=(python3)
  python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  command -v node >/dev/null 2>&1 || need+=(nodejs)
  command -v npm >/dev/null 2>&1 || need+=(npm)
  # Japanese glyphs, so the browser tests' screenshots are readable.
  [ -n "$(fc-list :lang=ja 2>/dev/null)" ] || need+=(fonts-ipafont-gothic)
  # initdb and pg_ctl for the PostgreSQL tests (the package's own cluster,
  # if it starts one, is not used).
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  # The XAdES tests verify with xmlsec1 (libxmlsec1 over OpenSSL).
  command -v xmlsec1 >/dev/null 2>&1 || need+=(xmlsec1)
  # The time-stamp tests talk to their TSA with curl too.
  command -v curl >/dev/null 2>&1 || need+=(curl)
  # A real balancer sends the PROXY protocol in the tests (started by them).
  [ -x /usr/sbin/haproxy ] || need+=(haproxy)
  # The systemd unit in deploy/ is checked by systemd-analyze (no running
  # systemd needed).
  [ -x /usr/bin/systemd-analyze ] || need+=(systemd)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} ..." >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The test suite checks the OpenID Connect provider with a stock library (PyJWT).
if [ "${1:-}" = "--deps-only" ] && ! python3 -c 'import jwt, cryptography' >/dev/null 2>&1; then
  echo "installing PyJWT for the tests ..." >&2
  python3 -m pip install -q --disable-pip-version-check 'pyjwt[crypto]>=2.9' >/dev/null 2>&1 \
    || python3 -m pip install -q --break-system-packages 'pyjwt[crypto]>=2.9' >/dev/null
fi
# Python tools of the tests, pinned: signxml verifies XAdES (the signer's
# certificate pinned), certomancer is the time-stamp authority the tests
# start, pyHanko validates CAdES with its time-stamps, openapi-spec-validator
# checks the OpenAPI document.
pydeps=('signxml==5.2.0' 'certomancer[web-api]==0.16.0' 'pyhanko==0.38.0' 'pyhanko-certvalidator==0.33.0'
        'openapi-spec-validator==0.7.1')
if [ "${1:-}" = "--deps-only" ] \
  && ! python3 -c 'import signxml, lxml, certomancer, werkzeug, pyhanko, openapi_spec_validator' >/dev/null 2>&1; then
  echo "installing signxml, certomancer, pyHanko and openapi-spec-validator for the tests ..." >&2
  python3 -m pip install -q --disable-pip-version-check "${pydeps[@]}" >/dev/null 2>&1 \
    || python3 -m pip install -q --break-system-packages "${pydeps[@]}" >/dev/null
fi
# playwright-core drives Debian's Chromium in the browser tests (no browser download).
if [ "${1:-}" = "--deps-only" ] && [ ! -d "$root/tests/browser/node_modules/playwright-core" ]; then
  echo "installing playwright-core for the browser tests ..." >&2
  (cd "$root/tests/browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
fi
[ "${1:-}" = "--deps-only" ] && exit 0

data=${INKAN_DATA_DIR:-$root/var}
label=${INKAN_TOKEN_LABEL:-inkan}
# Only the owner may enter the data directory (database, PINs, token files).
(umask 077 && mkdir -p "$data/softhsm/tokens")
conf="$data/softhsm/softhsm2.conf"
tokendir=$(cd "$data/softhsm/tokens" && pwd)
if [ ! -f "$conf" ]; then
  sed "s|@TOKENDIR@|$tokendir|" "$root/softhsm/softhsm2.conf.in" > "$conf"
  echo "wrote $conf" >&2
fi
export SOFTHSM2_CONF="$conf"

if softhsm2-util --show-slots 2>/dev/null | grep -Eq "^ *Label: *$label *$"; then
  echo "token \"$label\" exists ($conf)" >&2
  exit 0
fi

pins="$data/token-pins.toml"
so_pin=${INKAN_TOKEN_SO_PIN:-}
user_pin=${INKAN_TOKEN_USER_PIN:-}
if [ -f "$pins" ]; then
  [ -n "$so_pin" ] || so_pin=$(sed -n 's/^so_pin = "\(.*\)"$/\1/p' "$pins")
  [ -n "$user_pin" ] || user_pin=$(sed -n 's/^user_pin = "\(.*\)"$/\1/p' "$pins")
fi
if [ -z "$so_pin" ] || [ -z "$user_pin" ]; then
  rand() { LC_ALL=C tr -dc '0-9' </dev/urandom 2>/dev/null | head -c 16 || true; }
  [ -n "$so_pin" ] || so_pin=$(rand)
  [ -n "$user_pin" ] || user_pin=$(rand)
  (umask 077; printf 'user_pin = "%s"\nso_pin = "%s"\n' "$user_pin" "$so_pin" > "$pins")
  echo "wrote new random PINs to $pins" >&2
fi
softhsm2-util --module "$module" --init-token --free --label "$label" --so-pin "$so_pin" --pin "$user_pin" >/dev/null
echo "token \"$label\" initialised ($conf)" >&2
