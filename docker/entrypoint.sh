#!/usr/bin/env bash
# The image's entrypoint: one role per container.
#   head                  start the Ray head node (GCS on :6379) and stay up
#   worker                join the head at $RAY_HEAD_ADDRESS and stay up
#   train JOB [FLAGS...]  run `disttrain train JOB` on the cluster at $RAY_HEAD_ADDRESS,
#                         or on a local Ray cluster in this container when it is unset
#   help                  this text
# Anything else runs as a command (e.g. `bash`).
# Ray token authentication stays on: every node needs the same token, from the file
# /run/secrets/ray_auth_token (or $RAY_AUTH_TOKEN_PATH), else from $RAY_AUTH_TOKEN.
set -euo pipefail

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
fail() { echo "entrypoint: error: $*" >&2; exit 2; }

need_token() {
    # A token file (a compose secret, or $RAY_AUTH_TOKEN_PATH) keeps the token out of
    # `docker inspect` and every process's environment; $RAY_AUTH_TOKEN is the fallback.
    local file=${RAY_AUTH_TOKEN_PATH:-/run/secrets/ray_auth_token}
    if [ -s "$file" ]; then
        [ -r "$file" ] || fail "$file: the Ray token file is not readable by uid $(id -u)"
        unset RAY_AUTH_TOKEN
        export RAY_AUTH_TOKEN_PATH=$file
    elif [ -n "${RAY_AUTH_TOKEN_PATH:-}" ]; then
        fail "$file: the Ray token file is missing or empty; write the token into it" \
            "(e.g. openssl rand -hex 32 > $file) or unset RAY_AUTH_TOKEN_PATH"
    elif [ -z "${RAY_AUTH_TOKEN:-}" ]; then
        fail "RAY_AUTH_TOKEN is not set: every node of a cluster needs the same token;" \
            "generate one with 'openssl rand -hex 32' into a file given as the compose" \
            "secret ray_auth_token (or \$RAY_AUTH_TOKEN_PATH), or pass \$RAY_AUTH_TOKEN"
    fi
    export RAY_AUTH_MODE=token
}

wait_for_head() {
    local host=${RAY_HEAD_ADDRESS%:*} port=${RAY_HEAD_ADDRESS##*:} tries=${HEAD_WAIT_S:-60}
    for _ in $(seq "$tries"); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
        sleep 1
    done
    fail "no Ray head answered at $RAY_HEAD_ADDRESS within $tries s"
}

role=${1:-help}
[ $# -gt 0 ] && shift
case "$role" in
    head)
        need_token
        exec ray start --head --port="${RAY_PORT:-6379}" --num-cpus="${RAY_NUM_CPUS:-1}" \
            --disable-usage-stats --include-dashboard=false --block "$@"
        ;;
    worker)
        need_token
        [ -n "${RAY_HEAD_ADDRESS:-}" ] || fail "RAY_HEAD_ADDRESS is not set: give the head" \
            "as host:port, e.g. head:6379"
        wait_for_head
        exec ray start --address="$RAY_HEAD_ADDRESS" --num-cpus="${RAY_NUM_CPUS:-1}" \
            --disable-usage-stats --block "$@"
        ;;
    train)
        [ $# -ge 1 ] || fail "train needs a job file: train JOB [--workers N] [--backend B]"
        if [ -n "${RAY_HEAD_ADDRESS:-}" ]; then
            need_token
            wait_for_head
            exec disttrain train "$@" --address "$RAY_HEAD_ADDRESS"
        fi
        exec disttrain train "$@"
        ;;
    help|-h|--help)
        usage
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
