#!/usr/bin/env bash
# Overhead benchmark: the observer against bcc's sslsniff, side by side in one interleaved run.
# Writes bench/RESULTS.md (and bench/results.json with every raw figure). Needs root.
#
#   bench/run.sh [--rounds N] [--no-sslsniff] ...   (options are passed to bench/bench.py)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"

if [[ $EUID -ne 0 ]]; then
    echo "bench/run.sh loads eBPF probes: run it as root (sudo bench/run.sh)" >&2
    exit 1
fi

need_apt=()
command -v gcc >/dev/null || need_apt+=(gcc)
[[ -f /usr/include/openssl/ssl.h ]] || need_apt+=(libssl-dev)
command -v sslsniff-bpfcc >/dev/null || need_apt+=(bpfcc-tools)
# bcc compiles sslsniff's program at start against the running kernel's headers; Debian ships
# headers for its own kernels only, so a machine running another kernel gets the distribution's.
if [[ ! -e /lib/modules/$(uname -r)/build ]]; then
    need_apt+=(linux-headers-amd64)
fi
if ((${#need_apt[@]})); then
    echo "installing ${need_apt[*]} (apt)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_apt[@]}" >&2
fi
if [[ ! -e /lib/modules/$(uname -r)/build ]]; then
    headers=$(ls -d /usr/src/linux-headers-*-amd64 | sort -V | tail -1)
    echo "no headers for kernel $(uname -r): pointing bcc at ${headers}" >&2
    mkdir -p "/lib/modules/$(uname -r)"
    ln -sfn "$headers" "/lib/modules/$(uname -r)/build"
    ln -sfn "${headers%-amd64}-common" "/lib/modules/$(uname -r)/source"
fi

echo "building the observer (release) and bench/tls_loop.c" >&2
(cd "$root" && cargo build --release -p observer >&2)
build="$root/target/bench"
mkdir -p "$build"
gcc -O2 -Wall -o "$build/tls_loop" "$here/tls_loop.c" -lssl -lcrypto

go_args=()
if command -v go >/dev/null; then
    echo "building the Go test client (tests/go-client) for (g)" >&2
    (cd "$root/tests/go-client" && GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 \
        GOCACHE="$build/go-cache" GOPATH="$build/gopath" go build -trimpath -o "$build/go-client" .)
    go_args=(--go-client "$build/go-client")
else
    echo "no Go toolchain (apt-get install golang-go): skipping (g)" >&2
fi

exec python3 "$here/bench.py" --observer "$root/target/release/observer" --tls-loop "$build/tls_loop" "${go_args[@]}" "$@"
