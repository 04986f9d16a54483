#!/usr/bin/env bash
# Install Arize Phoenix (server and client) into a virtual environment of its own, for
# the tests that send a recorded run to a real Phoenix and read it back
# (tests/test_phoenix.py). Phoenix never enters codetape's own environment.
#
#   scripts/install-phoenix.sh [VENV]      default: $CODETAPE_PHOENIX_VENV, else /opt/codetape-phoenix
#
# Cached: when VENV already holds the pinned versions, it exits at once, so CI pays for
# the install (about a minute, from PyPI) once per machine. Delete VENV to force a new one.
set -euo pipefail

VENV="${1:-${CODETAPE_PHOENIX_VENV:-/opt/codetape-phoenix}}"
PYTHON="${PYTHON:-python3}"
# Pinned: the tests read spans back through this client's API.
REQUIREMENTS=(arize-phoenix==20.26.1 arize-phoenix-client==3.5.0)
STAMP="$VENV/.codetape-phoenix-stamp"
WANT="${REQUIREMENTS[*]}"

say() { printf '[install-phoenix] %s\n' "$*" >&2; }

# The pinned versions are installed (read from their metadata: importing phoenix takes
# seconds) and the environment's Python still runs.
installed() {
    [[ -x "$VENV/bin/python" && -x "$VENV/bin/phoenix" && -f "$STAMP" ]] &&
        [[ "$(cat "$STAMP")" == "$WANT" ]] &&
        "$VENV/bin/python" - "${REQUIREMENTS[@]}" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
sys.exit(any(version(name) != pinned for name, pinned in (r.split("==") for r in sys.argv[1:])))
PY
}

if installed; then
    say "Phoenix already installed in $VENV ($WANT)"
    exit 0
fi

if [[ -e "$VENV" && ! -f "$VENV/pyvenv.cfg" ]]; then
    say "ERROR: $VENV exists and is not a virtual environment; not touching it"
    exit 1
fi
start=$SECONDS
say "installing $WANT into $VENV with $("$PYTHON" -V 2>&1)"
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
log="$(mktemp -t install-phoenix.XXXXXX.log)"
if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${REQUIREMENTS[@]}" \
    >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    say "ERROR: pip install failed (full log: $log)"
    rm -rf "$VENV"
    exit 1
fi
"$VENV/bin/python" -c 'import phoenix.server.main, phoenix.client' ||
    { say "ERROR: Phoenix does not import from $VENV"; rm -rf "$VENV"; exit 1; }
printf '%s' "$WANT" >"$STAMP"
installed || { say "ERROR: $VENV does not hold $WANT"; exit 1; }
say "installed in $((SECONDS - start)) s"
