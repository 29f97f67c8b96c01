#!/usr/bin/env bash
# Installs what building and testing swiftvmm needs on a fresh Debian machine; the Makefile's run
# and test targets and .ci/run all call it. As root it installs missing Debian packages with
# apt-get; as anyone else it prints the one command that would, and fails.
#   tools/setup.sh            what `make run` needs (compiler, binutils, make)
#   tools/setup.sh test       also what `make test` needs (setpriv, gnuplot, gdb, curl, unshare, ip, ping; openapi-core and prometheus-client from PyPI)
set -euo pipefail

# tool -> Debian package that provides it
declare -A package=(
    [gcc]=gcc [as]=binutils [ld]=binutils [objcopy]=binutils [make]=make
    [setpriv]=util-linux [gnuplot]=gnuplot-nox [gdb]=gdb [curl]=curl [unshare]=util-linux [ip]=iproute2 [ping]=iputils-ping
)
tools=(gcc as ld objcopy make)
if [ "${1:-run}" = test ]; then tools+=(setpriv gnuplot gdb curl unshare ip ping); fi

# The API tests check replies against docs/openapi.yaml with openapi-core and parse the
# Prometheus endpoint with prometheus-client (both from PyPI).
python_modules() {
    [ "${1:-run}" = test ] || return 0
    python3 -c "import openapi_core, openapi_schema_validator, yaml, prometheus_client" 2>/dev/null && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing Python modules: run: python3 -m pip install --user openapi-core pyyaml prometheus-client" >&2
        return 1
    fi
    echo "setup: installing openapi-core and prometheus-client (PyPI)"
    python3 -m pip install -q openapi-core pyyaml prometheus-client 2>/dev/null ||
        python3 -m pip install -q --break-system-packages openapi-core pyyaml prometheus-client
}

missing=()
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${package[$tool]}")
done
if [ "${1:-run}" = test ]; then
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
fi
[ ${#missing[@]} -eq 0 ] && { python_modules "${1:-run}"; exit; }
# One entry per package, in a stable order.
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages: ${missing[*]}" >&2
    echo "setup: run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
python_modules "${1:-run}"
