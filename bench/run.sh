#!/usr/bin/env bash
# Overhead benchmark: the observer against bcc's sslsniff, side by side in one interleaved run,
# then the host tax (bench/host_tax.py: non-LLM workloads under the whole-host observer).
# Writes bench/RESULTS.md (and bench/results.json with every raw figure). Needs root.
#
#   bench/run.sh [--rounds N] [--no-sslsniff] ...   (options are passed to bench/bench.py; --rounds,
#                                                     --no-sslsniff and --output to host_tax.py too)
#   bench/run.sh --host-tax-only [options of bench/host_tax.py]   (just the host-tax section)
#   bench/run.sh --no-host-tax [...]                               (everything but the host tax)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"

host_tax=1 overhead=1 args=() shared=()
while (($#)); do
    case "$1" in
        --host-tax-only) overhead=0 ;;
        --no-host-tax) host_tax=0 ;;
        --rounds | --output) args+=("$1" "$2") shared+=("$1" "$2"); shift ;;
        --rounds=* | --output=* | --no-sslsniff) args+=("$1") shared+=("$1") ;;
        *) args+=("$1") ;;
    esac
    shift
done

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
if ((host_tax)); then
    command -v wrk >/dev/null || need_apt+=(wrk)
    command -v nginx >/dev/null || need_apt+=(nginx-light)
    command -v redis-server >/dev/null || need_apt+=(redis-server)
    command -v redis-benchmark >/dev/null || need_apt+=(redis-tools)
    command -v curl >/dev/null || need_apt+=(curl)
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

echo "building the observer (release)" >&2
(cd "$root" && cargo build --release -p observer >&2)
build="$root/target/bench"
mkdir -p "$build"
have_go=0
command -v go >/dev/null && have_go=1
go_build() {  # go_build DIR OUTPUT: Debian's Go, standard library and vendored modules only
    (cd "$1" && GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 \
        GOCACHE="$build/go-cache" GOPATH="$build/gopath" go build -trimpath -o "$2" .)
}

if ((overhead)); then
    echo "building bench/tls_loop.c" >&2
    gcc -O2 -Wall -o "$build/tls_loop" "$here/tls_loop.c" -lssl -lcrypto
    go_args=()
    if ((have_go)); then
        echo "building the Go test client (tests/go-client) for (g)" >&2
        go_build "$root/tests/go-client" "$build/go-client"
        go_args=(--go-client "$build/go-client")
    else
        echo "no Go toolchain (apt-get install golang-go): skipping (g)" >&2
    fi
    python3 "$here/bench.py" --observer "$root/target/release/observer" --tls-loop "$build/tls_loop" "${go_args[@]}" "${args[@]}"
    # host_tax.py takes only the options both parts share.
    args=("${shared[@]}")
fi

if ((host_tax)); then
    echo "building the mock LLM server (tests/src/bin/llm-mock-server) for the host tax" >&2
    (cd "$root" && cargo build --release -p observer-e2e --bin llm-mock-server >&2)
    pair_args=()
    if ((have_go)); then
        echo "building bench/go_tls_pair for the host tax" >&2
        go_build "$here/go_tls_pair" "$build/go_tls_pair"
        pair_args=(--go-pair "$build/go_tls_pair")
    else
        echo "no Go toolchain (apt-get install golang-go): skipping the host tax's Go workload" >&2
    fi
    python3 "$here/host_tax.py" --observer "$root/target/release/observer" \
        --mock-server "$root/target/release/llm-mock-server" "${pair_args[@]}" "${args[@]}"
fi
