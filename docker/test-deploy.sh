#!/usr/bin/env bash
# make test-deploy: build the image and run the compose stack for real (tests/deploy).
#   1. installs docker.io, docker-compose and debootstrap with apt if any is missing;
#   2. starts dockerd if `docker info` does not answer (and stops only that one at exit);
#   3. makes the base image disttrain-base:bookworm with debootstrap + docker import, once
#      (no registry is reachable here; the host's extra CA certificates go into it, since
#      this network inspects TLS and pip in the build would fail without them);
#   4. builds the project image (disttrain:test-deploy) from docker/Dockerfile on that base;
#   5. runs pytest tests/deploy against it (extra arguments go to pytest, e.g. -k kill).
# Where Docker cannot run, it says why in one line: exit 1 under CI=true, else 0 (skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${DISTTRAIN_BASE_IMAGE:-disttrain-base:bookworm}
IMAGE=${DISTTRAIN_IMAGE:-disttrain:test-deploy}
PYTHON=${DISTTRAIN_TEST_PYTHON:-.venv/bin/python}
started_dockerd="" root=""

say() { echo "test-deploy: $*" >&2; }
cannot() {
    if [ "${CI:-}" = true ]; then say "cannot run Docker here: $*"; exit 1; fi
    say "skipped, Docker cannot run here: $*"; exit 0
}
elapsed() { echo "$(( $(date +%s) - t0 )) s"; }

cleanup() {
    if [ -n "$root" ]; then  # never rm -rf through a mounted /proc
        if mountpoint -q "$root/proc"; then umount "$root/proc" || umount -l "$root/proc"; fi
        rm -rf --one-file-system "$root"
    fi
    if [ -n "$started_dockerd" ]; then
        say "stopping the dockerd this script started (pid $started_dockerd)"
        kill "$started_dockerd" 2>/dev/null || true
        for _ in $(seq 30); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 1; done
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_tools() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 \
        || missing+=(docker-compose)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" = 0 ] || cannot "${missing[*]} missing and not root to apt-get install them"
    command -v apt-get >/dev/null || cannot "${missing[*]} missing and no apt-get"
    say "installing ${missing[*]} with apt-get"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; } \
        >/tmp/test-deploy-apt.log 2>&1 \
        || cannot "apt-get install ${missing[*]} failed: $(tail -1 /tmp/test-deploy-apt.log)"
}

start_dockerd() {
    docker info >/dev/null 2>&1 && return 0
    command -v dockerd >/dev/null || cannot "no dockerd"
    [ "$(id -u)" = 0 ] || cannot "no Docker daemon answers and dockerd needs root"
    local log=/tmp/test-deploy-dockerd.log
    say "no Docker daemon answers; starting dockerd (log $log)"
    dockerd >"$log" 2>&1 &
    started_dockerd=$!
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && return 0
        kill -0 "$started_dockerd" 2>/dev/null \
            || cannot "dockerd exited: $(grep -i 'level=fatal\|error' "$log" | tail -1)"
        sleep 0.5
    done
    cannot "dockerd did not answer within 30 s: $(tail -1 "$log")"
}

debian_mirror() {
    # The URIs: line of apt's deb822 sources, else a deb line of sources.list.
    local uri
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' \
        /etc/apt/sources.list 2>/dev/null || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

build_base_image() {
    # Labelled with a hash of the extra CA certificates, so new ones rebuild it.
    local certs ca_hash
    certs=$(find /usr/local/share/ca-certificates -name '*.crt' 2>/dev/null | sort)
    ca_hash=$(if [ -n "$certs" ]; then cat $certs; fi | sha256sum | cut -c1-16)
    if [ "$(docker image inspect -f '{{index .Config.Labels "disttrain.ca"}}' "$BASE_IMAGE" \
            2>/dev/null)" = "$ca_hash" ]; then
        say "base image $BASE_IMAGE is cached"
        return 0
    fi
    [ "$(id -u)" = 0 ] || cannot "building $BASE_IMAGE with debootstrap needs root"
    local mirror; mirror=$(debian_mirror)
    root=$(mktemp -d /var/tmp/disttrain-base.XXXXXX)
    say "building $BASE_IMAGE: debootstrap bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$root" "$mirror" >/tmp/test-deploy-debootstrap.log \
        2>&1 || cannot "debootstrap failed: $(tail -1 /tmp/test-deploy-debootstrap.log)"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    mkdir -p "$root/usr/local/share/ca-certificates"
    for cert in $certs; do cp "$cert" "$root/usr/local/share/ca-certificates/"; done
    mount -t proc proc "$root/proc"
    chroot "$root" /bin/sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends python3 python3-venv python3-pip \
        ca-certificates && update-ca-certificates && apt-get clean \
        && rm -rf /var/lib/apt/lists/*' >/tmp/test-deploy-chroot.log 2>&1 \
        || cannot "apt-get in the base image failed: $(tail -1 /tmp/test-deploy-chroot.log)"
    umount "$root/proc"
    : >"$root/etc/resolv.conf"
    tar -C "$root" -c . | docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'ENV LANG=C.UTF-8' -c "LABEL disttrain.ca=$ca_hash" - "$BASE_IMAGE" >/dev/null
    rm -rf "$root"
    root=""
}

t0=$(date +%s)
install_tools
start_dockerd
build_base_image
say "base image ready after $(elapsed); building $IMAGE"
# The context is what the Dockerfile copies, not the checkout (whose .venv is ~1.5 GB).
tar -c --exclude=__pycache__ --exclude='*.pyc' pyproject.toml README.md disttrain workers \
    launch bench examples docker \
    | docker build -f docker/Dockerfile --build-arg "BASE=$BASE_IMAGE" -t "$IMAGE" - \
    >/tmp/test-deploy-build.log 2>&1 || { tail -30 /tmp/test-deploy-build.log >&2; exit 1; }
say "image $IMAGE built after $(elapsed); running tests/deploy"
DISTTRAIN_IMAGE=$IMAGE "$PYTHON" -m pytest -q -p no:cacheprovider tests/deploy "$@"
say "done after $(elapsed)"
