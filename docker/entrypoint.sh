#!/usr/bin/env bash
# The image's entrypoint: one role per container.
#   head                  start the Ray head node (GCS on :6379) and stay up
#   worker                join the head at $RAY_HEAD_ADDRESS and stay up
#   train JOB [FLAGS...]  run `disttrain train JOB` on the cluster at $RAY_HEAD_ADDRESS,
#                         or on a local Ray cluster in this container when it is unset
#   help                  this text
# Anything else runs as a command (e.g. `bash`).
# Ray token authentication stays on: head and workers need the same $RAY_AUTH_TOKEN.
set -euo pipefail

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
fail() { echo "entrypoint: error: $*" >&2; exit 2; }

need_token() {
    [ -n "${RAY_AUTH_TOKEN:-}" ] || fail "RAY_AUTH_TOKEN is not set: every node of a cluster" \
        "needs the same token; generate one with 'openssl rand -hex 32' and pass it to" \
        "every container (see docker/compose.yaml)"
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
