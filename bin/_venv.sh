# Sourced by bin/serve and bin/test: a project virtualenv with one requirements file installed.
# The caller sets REQUIREMENTS (requirements.txt for the service, requirements-dev.txt for
# the tests). Installs again only when that file (or requirements.txt, which the dev file
# includes) changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EVENTSERVICE_VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-python3}"
REQUIREMENTS="${REQUIREMENTS:-requirements.txt}"
FIRST_RUN=0
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON_BIN" -m venv "$VENV"
  FIRST_RUN=1
fi
_stamp_of() { cat "$ROOT/requirements.txt" "$ROOT/$1" | sha256sum | cut -d' ' -f1; }
STAMP="$VENV/.installed-${REQUIREMENTS%.txt}.sha256"
WANT="$(_stamp_of "$REQUIREMENTS")"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  if [ "$FIRST_RUN" = 1 ]; then
    echo "installing dependencies (first run)…" >&2
  else
    echo "installing dependencies ($REQUIREMENTS changed)…" >&2
  fi
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r "$ROOT/$REQUIREMENTS"
  echo "$WANT" > "$STAMP"
  # The dev file includes the runtime one: bin/serve need not install again after bin/test.
  if [ "$REQUIREMENTS" != requirements.txt ]; then
    _stamp_of requirements.txt > "$VENV/.installed-requirements.sha256"
  fi
fi
cd "$ROOT"
