# Sourced by bin/* scripts: finds Python >= 3.11 and creates or updates .venv, reinstalling
# only when pyproject.toml (or the extras asked for) changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# pgserver asks platformdirs for a runtime dir; give it a private one instead of a warning.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$ROOT/.data/xdg}"
mkdir -p -m 700 "$XDG_RUNTIME_DIR"

find_python() {
  local candidate
  for candidate in python3.13 python3.12 python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "mark-notify needs Python 3.11 or newer on PATH" >&2
  return 1
}

# ensure_venv [EXTRA ...]: extras as separate words or comma-separated ("dev,embedded").
# `embedded` (pgserver, the embedded PostgreSQL) is always added: every bin/ tool may start
# or reach bin/dev's embedded database, and only the production image goes without it.
# One stamp per set of extras, named after them in sorted order, holds the hash of the
# pyproject.toml it was installed from.
ensure_venv() {
  local extras spec stamp want
  extras="$(printf '%s\n' embedded ${*//,/ } | sort -u | paste -sd, -)"
  spec=".[$extras]"
  if [ ! -x .venv/bin/python ]; then
    echo "creating .venv ..." >&2
    "$(find_python)" -m venv .venv
  fi
  stamp=".venv/.mark-notify-installed-$extras"
  want="$(cat pyproject.toml | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing mark-notify [$extras] into .venv ..." >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec" >&2
    echo "$want" > "$stamp"
  fi
}
