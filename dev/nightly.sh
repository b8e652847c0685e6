# Sourced by dev/tsan.sh and dev/fuzz.sh: `need_nightly STAGE` makes sure the nightly
# toolchain with rust-src is there, installing what is missing; when that cannot be done it
# skips the stage (exit 0 with a notice), except when CI is set: then it fails (CI must not
# skip it). `unavailable STAGE WHY` is that skip-or-fail.
unavailable() {
    if [ -n "${CI:-}" ]; then
        echo "$1: FAILED: $2 (CI is set, so this stage may not be skipped)" >&2
        exit 1
    fi
    echo "$1: skipped ($2; install with: rustup toolchain install nightly --component rust-src)"
    exit 0
}
need_nightly() {
    if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
        rustup toolchain install nightly --profile minimal --component rust-src || unavailable "$1" "no nightly toolchain, and it cannot be installed"
    fi
    if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
        rustup component add rust-src --toolchain nightly || unavailable "$1" "nightly has no rust-src, and it cannot be installed"
    fi
}
