#!/usr/bin/env bash
# Fails when the committed bindings differ from what bindings/regenerate.sh
# produces from the current sources (run it and commit the result).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
bash "$ROOT/bindings/regenerate.sh" "$TMP" >/dev/null
status=0
for d in kotlin swift python c; do
    if ! diff -ru "$ROOT/bindings/$d" "$TMP/$d" >"$TMP/$d.diff" 2>&1; then
        echo "stale: bindings/$d differs from the generated bindings:"
        head -40 "$TMP/$d.diff"
        status=1
    fi
done
if [ "$status" -eq 0 ]; then
    echo "bindings are fresh"
else
    echo "run bindings/regenerate.sh and commit the result"
fi
exit "$status"
