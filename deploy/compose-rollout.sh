#!/bin/bash
# Recreate the replicas of the compose deployment one at a time, so that the entry point
# always has a ready replica (`docker compose up -d` recreates them all at once: requests
# sent meanwhile got nginx's 502). Use it instead of `up -d` after changing the replicas'
# environment in .env (INFER_API_TOKENS rotation, limits) or after `docker compose build`.
#
#   deploy/compose-rollout.sh            # from the repository, with the .env compose reads
#
# For each replica running now: start one more replica with the current configuration
# (`up --no-recreate --scale N+1`), wait until its /readyz answers 200, wait for the entry
# point's DNS refresh (nginx re-resolves every 10 s) so that it sends requests there, then
# stop the old replica gracefully (SIGTERM: gunicorn finishes the requests in flight within
# its graceful timeout; nginx sends new ones to the others and retries a refused one), and
# wait for the entry point to forget its address before starting the next one.
# It follows the environment `docker compose` reads (COMPOSE_FILE, COMPOSE_PROJECT_NAME,
# --env-file given as COMPOSE_ENV_FILE). Exits non-zero, leaving the old replica running,
# when a new one is not ready within READY_TIMEOUT seconds.
set -euo pipefail
SERVICE=${SERVICE:-descriptor-infer}
READY_TIMEOUT=${READY_TIMEOUT:-900}   # a replica that has to load a large release
RESOLVE_WAIT=${RESOLVE_WAIT:-12}      # nginx's `resolver ... valid=10s`, plus a margin
STOP_TIMEOUT=${STOP_TIMEOUT:-40}      # docker-compose.yml's stop_grace_period

compose() {
    if [ -n "${COMPOSE_ENV_FILE:-}" ]; then
        docker compose --env-file "$COMPOSE_ENV_FILE" "$@"
    else
        docker compose "$@"
    fi
}

ready() { # container id: its /readyz answers 200
    docker exec "$1" python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5001/readyz', timeout=4)" \
        >/dev/null 2>&1
}

mapfile -t old < <(compose ps -q "$SERVICE")
[ "${#old[@]}" -gt 0 ] || { echo "no running replica of $SERVICE: use docker compose up -d"; exit 1; }
echo "rolling ${#old[@]} replica(s) of $SERVICE"
recreated=0
for id in "${old[@]}"; do
    before=$(compose ps -q "$SERVICE" | sort)
    running=$(printf '%s\n' "$before" | grep -c .)
    compose up -d --no-deps --no-recreate --scale "$SERVICE=$((running + 1))" "$SERVICE" >/dev/null
    new=$(comm -13 <(printf '%s\n' "$before") <(compose ps -q "$SERVICE" | sort) | head -1)
    [ -n "$new" ] || { echo "no new replica was started"; exit 1; }
    start=$SECONDS
    until ready "$new"; do
        if (( SECONDS - start > READY_TIMEOUT )); then
            echo "replica ${new:0:12} not ready after ${READY_TIMEOUT}s; ${id:0:12} keeps serving"
            exit 1
        fi
        sleep 1
    done
    echo "replica ${new:0:12} ready after $((SECONDS - start))s; the entry point picks it up"
    sleep "$RESOLVE_WAIT"
    docker stop -t "$STOP_TIMEOUT" "$id" >/dev/null
    docker rm "$id" >/dev/null
    recreated=$((recreated + 1))
    echo "replica ${id:0:12} stopped and removed ($recreated/${#old[@]})"
    # Until its next resolve the entry point still holds the removed replica's address; a
    # replica started now, not yet listening, would be a second address that fails.
    if (( recreated < ${#old[@]} )); then sleep "$RESOLVE_WAIT"; fi
done
echo "done: $recreated replica(s) recreated"
