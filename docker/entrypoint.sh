#!/usr/bin/env bash
# The image's entrypoint: one role per container.
#   head                  start the Ray head node (GCS on :6379, dashboard and Jobs API on :8265)
#   worker                join the head at $RAY_HEAD_ADDRESS and stay up
#   train JOB [FLAGS...]  join the cluster at $RAY_HEAD_ADDRESS as a node with no CPUs, then run
#                         `disttrain train JOB` there as PID 1; with no $RAY_HEAD_ADDRESS, on a
#                         local Ray cluster in this container. $DISTTRAIN_ARGS adds flags (split on
#                         spaces), DISTTRAIN_RESUME=1 adds --resume
#   health                exit 0 if this container's role is healthy (the image's HEALTHCHECK)
#   help                  this text
# Anything else runs as a command (e.g. `bash`).
# Ray token authentication stays on: every node needs the same token, from the file
# /run/secrets/ray_auth_token (or $RAY_AUTH_TOKEN_PATH), else from $RAY_AUTH_TOKEN.
set -euo pipefail

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
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

need_head_address() {
    [ -n "${RAY_HEAD_ADDRESS:-}" ] || fail "RAY_HEAD_ADDRESS is not set: give the head" \
        "as host:port, e.g. head:6379"
}

wait_for_head() {
    local host=${RAY_HEAD_ADDRESS%:*} port=${RAY_HEAD_ADDRESS##*:} tries=${HEAD_WAIT_S:-60}
    for _ in $(seq "$tries"); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
        sleep 1
    done
    fail "no Ray head answered at $RAY_HEAD_ADDRESS within $tries s"
}

head_is_here() {
    # The head runs on this machine (same network namespace): this machine is a Ray node.
    local host=${RAY_HEAD_ADDRESS%:*} ip
    case "$host" in localhost|127.*) return 0 ;; esac
    ip=$(getent ahostsv4 "$host" | awk 'NR == 1 {print $1}')
    [ -n "$ip" ] || return 1
    case " $(hostname -I 2>/dev/null) " in *" $ip "*) return 0 ;; esac
    return 1
}

join_as_driver_node() {
    # A Ray driver must run on a Ray node (ray-project/ray#32933: "No node info found
    # matching attributes"), so a driver container joins first, offering no CPUs: its
    # ranks still run on the workers. The node's processes end with the container.
    head_is_here && return 0
    local log=/tmp/disttrain-ray-start.log
    ray start --address="$RAY_HEAD_ADDRESS" --num-cpus=0 --disable-usage-stats >"$log" 2>&1 \
        || fail "could not join the Ray cluster at $RAY_HEAD_ADDRESS: $(tail -1 "$log")"
}

train_flags() {
    # Extra flags from the environment (into the array flags), so that `docker compose up`
    # can resume a run or override the job without editing the compose file.
    flags=()
    if [ -n "${DISTTRAIN_ARGS:-}" ]; then read -ra flags <<<"$DISTTRAIN_ARGS"; fi
    case "${DISTTRAIN_RESUME:-}" in
        ""|0|false|no) ;;
        1|true|yes) flags+=(--resume) ;;
        *) fail "DISTTRAIN_RESUME=$DISTTRAIN_RESUME: use 1 to resume, or leave it unset" ;;
    esac
}

has_process() { grep -qx "$1" /proc/[0-9]*/comm 2>/dev/null; }

health() {
    # Which role PID 1 plays decides what healthy means.
    local pid1
    pid1=$(tr '\0' ' ' </proc/1/cmdline)
    case "$pid1" in
        *"ray start --head"*)  # the GCS answers (the Jobs API too, if it was asked for)
            (exec 3<>"/dev/tcp/127.0.0.1/${RAY_PORT:-6379}") 2>/dev/null \
                || { echo "the GCS does not answer on :${RAY_PORT:-6379}"; return 1; } ;;
        *"ray start --address"*)
            has_process raylet || { echo "no raylet runs"; return 1; } ;;
        *"disttrain train"*)   # PID 1 is the driver, so it lives; its Ray node must too
            has_process raylet || { echo "the driver's raylet is gone"; return 1; } ;;
        *) echo "not (yet) a disttrain role: $pid1"; return 1 ;;
    esac
}

role=${1:-help}
[ $# -gt 0 ] && shift
case "$role" in
    head)
        need_token
        exec ray start --head --port="${RAY_PORT:-6379}" --num-cpus="${RAY_NUM_CPUS:-1}" \
            --disable-usage-stats --include-dashboard=true \
            --dashboard-host="${RAY_DASHBOARD_HOST:-0.0.0.0}" \
            --dashboard-port="${RAY_DASHBOARD_PORT:-8265}" --block "$@"
        ;;
    worker)
        need_token
        need_head_address
        wait_for_head
        exec ray start --address="$RAY_HEAD_ADDRESS" --num-cpus="${RAY_NUM_CPUS:-1}" \
            --disable-usage-stats --block "$@"
        ;;
    train)
        [ $# -ge 1 ] || fail "train needs a job file: train JOB [--workers N] [--backend B]"
        train_flags
        if [ -n "${RAY_HEAD_ADDRESS:-}" ]; then
            need_token
            wait_for_head
            join_as_driver_node
            exec disttrain train "$@" "${flags[@]}" --address "$RAY_HEAD_ADDRESS"
        fi
        exec disttrain train "$@" "${flags[@]}"
        ;;
    health)
        health
        ;;
    help|-h|--help)
        usage
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
