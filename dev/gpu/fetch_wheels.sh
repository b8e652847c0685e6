#!/usr/bin/env bash
# Fills .whl/ (gitignored) with the wheels the GPU machine lacks, for its Python 3.12
# (x86-64 manylinux), so dev/gpu/device_run.sh can install them offline into /tmp/site.
#   bash dev/gpu/fetch_wheels.sh core nvcomp5        # zarr-python + numcodecs + build backend, nvCOMP 5
#   bash dev/gpu/fetch_wheels.sh moto nvcomp6        # moto's S3 server (S3 on the GPU path), nvCOMP 6
# Sets (the device tool carries at most 64 MiB with .carry/rust's ~28 MiB, so not all at once;
# a second call to a machine still warm keeps /tmp/site and .carry from the first):
#   core: zarr-python, numcodecs, donfig, google-crc32c, pyyaml, packaging, typing_extensions
#         (not numpy: the machine's torch environment has it) and scikit-build-core +
#         pathspec (the pipwheel stage's isolated build env installs them from .whl). ~11 MiB.
#   moto: moto's S3 server and boto3, without moto[server]'s other services' dependencies
#         (cfn-lint, sympy, ... ~50 MiB): the packages ThreadedMotoServer needs for S3. ~31 MiB.
#   nvcomp5, nvcomp6: nvidia-libnvcomp-cu13 5.1 (~19 MiB) or 6.0 (~28 MiB).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$root/.whl"
rm -rf "$out"
mkdir -p "$out"
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
# Pins from requirements-dev.txt where it has them, so the machine runs what CI tests.
pin() { grep -iE "^$1==" "$root/requirements-dev.txt" || echo "$1"; }
for set in "$@"; do
  case "$set" in
    core) pkgs=("$(pin zarr)" "$(pin numcodecs)" donfig google-crc32c pyyaml packaging typing_extensions
                "$(pin scikit-build-core)" pathspec) ;;
    moto) pkgs=(moto boto3 botocore s3transfer jmespath cryptography cffi pycparser requests urllib3 idna certifi
                charset_normalizer xmltodict werkzeug markupsafe python_dateutil six responses pyyaml jinja2 flask
                flask_cors blinker itsdangerous click py_partiql_parser) ;;
    nvcomp5) pkgs=("$(pin nvidia-libnvcomp-cu13)") ;;  # the pinned 5.1 (5.3 is ~27 MiB)
    nvcomp6) pkgs=("nvidia-libnvcomp-cu13>=6,<7") ;;
    *) echo "fetch_wheels: unknown set '$set' (core, moto, nvcomp5, nvcomp6)" >&2; exit 2 ;;
  esac
  python3 -m pip download -q --no-deps "${plat[@]}" -d "$out" "${pkgs[@]}"
done
du -sh "$out" >&2
