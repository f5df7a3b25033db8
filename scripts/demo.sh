#!/usr/bin/env bash
# The main job on a throwaway cluster: PostgreSQL archives into a local-directory repository
# through `walferry-archive push %p`; a base backup is recovered to a restore point through
# `walferry-restore fetch %f %p`; every row is checked; a short report follows.
# Installs what is missing first (scripts/setup.sh). Extra arguments go to walferry-demo
# (--scale, --seconds, --keep).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --bins -p walferry -p walferry-testutil
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
exec "$target_dir/debug/walferry-demo" --bin-dir "$target_dir/debug" "$@"
