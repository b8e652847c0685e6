#!/usr/bin/env bash
# Installs (once) what the object store tests need into the project venv: moto's S3 server
# and boto3 (requirements-remote.txt). The tests start the servers themselves
# (tests/remote_servers.py, on 127.0.0.1) and skip with a message when this was not run.
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
