#!/usr/bin/env bash
# Installs what `cargo bench --bench recovery` needs and the test suite does not:
# pgBackRest 2.45 and stunnel (Debian's packages), openssl for a self-signed certificate,
# GNU time for peak memory, and a Python virtualenv with matplotlib for the chart.
#
#   benches/recovery-setup.sh VENV_DIR
#
# Idempotent: installs only what is missing. Needs root for apt-get (the bench runs as root).
set -euo pipefail

venv=${1:?usage: recovery-setup.sh VENV_DIR}

missing=()
command -v pgbackrest >/dev/null 2>&1 || missing+=(pgbackrest)
command -v stunnel4 >/dev/null 2>&1 || command -v stunnel >/dev/null 2>&1 || missing+=(stunnel4)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ -x /usr/bin/time ] || missing+=(time)
# Debian's interpreter is the one python3-venv belongs to.
python=/usr/bin/python3
[ -x "$python" ] || python=$(command -v python3 || true)
[ -n "$python" ] || missing+=(python3)
if [ -n "$python" ] && ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "recovery-setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
        apt-get update >&2
        apt-get install -y --no-install-recommends "${missing[@]}" >&2
    fi
    python=/usr/bin/python3
fi

if ! "$venv/bin/python" -c 'import matplotlib' >/dev/null 2>&1; then
    echo "recovery-setup: creating $venv with matplotlib" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check matplotlib >&2
fi

pgbackrest version >&2
