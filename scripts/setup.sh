#!/usr/bin/env bash
# Installs what walferry's tests, benchmarks and demo need on a fresh Debian machine that has
# Rust: PostgreSQL's server binaries (Debian's packages) and moto 5.2.5, a second, independent
# S3 implementation the storage conformance suite runs against. Safe to run again: it installs
# only what is missing.
set -euo pipefail

MOTO_VERSION=5.2.5
MOTO_VENV=${WALFERRY_MOTO_VENV:-/opt/walferry/moto-$MOTO_VERSION}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

have_postgres() {
    command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

if ! have_postgres || ! id postgres >/dev/null 2>&1; then
    echo "setup: installing PostgreSQL from Debian's packages"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
    # The package starts a cluster of its own; walferry's tests start their own clusters.
    as_root service postgresql stop >/dev/null 2>&1 || true
fi

if [ ! -x "$MOTO_VENV/bin/moto_server" ]; then
    echo "setup: installing moto $MOTO_VERSION into $MOTO_VENV"
    as_root mkdir -p "$(dirname "$MOTO_VENV")"
    as_root python3 -m venv "$MOTO_VENV"
    as_root "$MOTO_VENV/bin/pip" install -q "moto[server]==$MOTO_VERSION"
fi
