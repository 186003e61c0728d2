# Sourced by scripts/up and scripts/test: make sure the venv, Python packages and Node packages exist.
# Works on a fresh machine (no venv, no node_modules), as root or as a normal user.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

python_bin() {
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then echo "$candidate"; return; fi
  done
  echo "python3.11 (or python3) is required" >&2; exit 1
}

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$(python_bin)" -m venv .venv
fi
stamp=".venv/.requirements.sha256"
want="$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing Python packages (requirements-dev.txt)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$want" > "$stamp"
fi
if [ ! -x node_modules/.bin/azurite-table ] || [ ! -f node_modules/axe-core/axe.min.js ] \
   || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "==> installing Node packages (Azurite, axe-core)"
  npm ci --no-audit --no-fund --loglevel=error
fi
project_stamp=".venv/.project.sha256"
project_want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -x .venv/bin/markr-ops ] || [ ! -f "$project_stamp" ] || [ "$(cat "$project_stamp")" != "$project_want" ]; then
  echo "==> installing the project in editable mode (markr-ops)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
  echo "$project_want" > "$project_stamp"
fi
checkov_venv=".local/tools/checkov-$(sha256sum tests/infra/checkov-requirements.txt | cut -c1-12)"
if [ ! -f "$checkov_venv/.installed" ] || [ ! -x "$checkov_venv/bin/checkov" ]; then
  echo "==> installing checkov into $checkov_venv (tests/infra/checkov-requirements.txt)"
  "$(python_bin)" -m venv --clear "$checkov_venv"
  "$checkov_venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/infra/checkov-requirements.txt
  cp tests/infra/checkov-requirements.txt "$checkov_venv/.installed"
fi
# The browser tests (tests/browser) drive Debian's Chromium through Playwright (never a browser
# build of Playwright's own: it cannot be downloaded here). MARKR_CHROMIUM names another binary.
if [ -z "${MARKR_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing Chromium (apt-get install chromium) for the browser tests"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
      echo "==> apt-get could not install chromium: the browser tests (tests/browser) will fail." >&2
    fi
  else
    echo "==> Chromium is missing: the browser tests (tests/browser) will fail." >&2
    echo "    Install it with 'sudo apt-get install chromium', or set MARKR_CHROMIUM to a Chromium binary." >&2
  fi
fi
