#!/bin/sh
# Builds kryoptic, a PKCS#11 soft token written in Rust (crates.io, 1.5.4),
# and runs inkan's keystore tests against it: a second, independent PKCS#11
# implementation next to SoftHSM.
#
#   softhsm/second-module.sh          build (cached in target/second-module/) and test
#   softhsm/second-module.sh build    build only; prints the module's path
#
# Why kryoptic: it installs here from the package registry alone (crates.io),
# it is a full PKCS#11 3.x token (RSA, ECDSA, AES key wrap with padding, HMAC,
# unwrap templates) from a different code base than SoftHSM, and it is what
# Fedora/RHEL ship as a soft token. It needs OpenSSL 3.2 or later, which
# Debian 12 does not have (3.0): the OpenSSL sources come from the
# `openssl-src` crate and are built once, statically, into the module.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK="$ROOT/target/second-module"
KRYOPTIC=1.5.4
OPENSSL_SRC=300.6.1+3.6.3
MODULE="$WORK/target/release/libkryoptic_pkcs11.so"
mkdir -p "$WORK"

need() { command -v "$1" >/dev/null 2>&1; }
# Installs Debian packages (as root, or through sudo); the package lists are
# fetched first when the machine has none yet.
apt_install() {
    echo "second-module: installing $* ..." >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
pkgs=""
# bindgen (in kryoptic's ossl-sys) loads libclang.so, with clang's own headers
# beside it: both come with libclang-dev. Other libclang-like files prove
# nothing (Debian images ship libclang-cpp.so, the C++ interface, alone).
# LIBCLANG_PATH names a libclang from elsewhere.
[ -n "${LIBCLANG_PATH:-}" ] || installed libclang-dev || pkgs="$pkgs libclang-dev"
# OpenSSL's build: a C compiler, make, and perl with the modules its
# Configure loads (IPC::Cmd is in Debian's perl, not in perl-base).
need gcc || pkgs="$pkgs gcc libc6-dev"
need make || pkgs="$pkgs make"
perl -MIPC::Cmd -MFile::Copy -MFindBin -e 1 2>/dev/null || pkgs="$pkgs perl"
# shellcheck disable=SC2086 # one word a package
[ -z "$pkgs" ] || apt_install $pkgs

# The crates' sources: `cargo info` downloads a crate into the registry cache.
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
crate_dir() {
    name=$1 version=$2
    crate=$(ls "$CARGO_HOME"/registry/cache/*/"$name-$version.crate" 2>/dev/null | head -1 || true)
    if [ -z "$crate" ]; then
        (cd "$WORK" && cargo info "$name@$version" >/dev/null) ||
            { echo "second-module: cannot download $name $version from the registry" >&2; exit 1; }
        crate=$(ls "$CARGO_HOME"/registry/cache/*/"$name-$version.crate" 2>/dev/null | head -1 || true)
        [ -n "$crate" ] || { echo "second-module: $name $version is not in $CARGO_HOME/registry/cache" >&2; exit 1; }
    fi
    mkdir -p "$WORK/src"
    if [ ! -d "$WORK/src/$name-$version" ]; then
        # Extracted whole or not at all (a killed run leaves no half tree).
        rm -rf "$WORK/src/.partial" && mkdir "$WORK/src/.partial"
        tar xzf "$crate" -C "$WORK/src/.partial"
        mv "$WORK/src/.partial/$name-$version" "$WORK/src/$name-$version"
    fi
    echo "$WORK/src/$name-$version"
}

if [ ! -f "$MODULE" ]; then
    OPENSSL="$WORK/openssl"
    if [ ! -f "$OPENSSL/libcrypto.a" ]; then
        src=$(crate_dir openssl-src "$OPENSSL_SRC")
        rm -rf "$OPENSSL"
        cp -r "$src/openssl" "$OPENSSL"
        # Built in place; a killed build starts over (libcrypto.a is made last).
        echo "second-module: building OpenSSL $(cat "$OPENSSL/VERSION.dat" | sed -n 's/^MAJOR=//p').x statically (a few minutes)" >&2
        # no-module/no-legacy: the crate's trimmed sources cannot build the
        # legacy provider, which kryoptic does not use.
        (cd "$OPENSSL" && ./Configure linux-x86_64 no-shared no-module no-legacy no-docs no-tests no-apps \
            enable-ec_nistp_64_gcc_128 >/dev/null && make -j"$(nproc)" build_libs >/dev/null)
    fi
    dir=$(crate_dir kryoptic "$KRYOPTIC")
    cp "$ROOT/softhsm/kryoptic.Cargo.lock" "$dir/Cargo.lock"
    # A package of its own, not a member of inkan's workspace around it.
    grep -q '^\[workspace\]' "$dir/Cargo.toml" || printf '\n[workspace]\n' >>"$dir/Cargo.toml"
    echo "second-module: building kryoptic $KRYOPTIC" >&2
    (cd "$dir" && KRYOPTIC_OPENSSL_SOURCES="$OPENSSL" CARGO_TARGET_DIR="$WORK/target" \
        cargo build --release --locked --no-default-features --features standard,ossl/ossl-sys)
fi

if [ "${1:-test}" = build ]; then
    echo "$MODULE"
    exit 0
fi

# Thirty-two empty slots (one per in-process test token: `PREMADE_TOKENS` in
# tests/it/harness.rs), in a
# directory of their own.
TOKENS=$(mktemp -d)
trap 'rm -rf "$TOKENS"' EXIT INT TERM
for i in $(seq 1 32); do
    printf '[[slots]]\nslot = %s\ndbtype = "sqlite"\ndbargs = "%s/token-%s.sql"\n\n' "$i" "$TOKENS" "$i"
done >"$TOKENS/kryoptic.conf"
echo "second-module: inkan's keystore tests against $MODULE" >&2
cd "$ROOT"
KRYOPTIC_CONF="$TOKENS/kryoptic.conf" INKAN_TEST_PKCS11_MODULE="$MODULE" \
    cargo test --locked --test it -- keystore::
