#!/usr/bin/env bash
# Build deploy/Dockerfile and run the image as a container would, without a Docker engine:
# buildah (Debian's package) builds it, and the image's own entrypoint then runs in it against a
# PostgreSQL database of its own. `make image-check`; needs root (buildah's chroot isolation, the
# read-only run's mounts), buildah, curl and psql.
#
#   deploy/check-image.sh [--stand-in] [--keep]
#
#   --stand-in  build on a stand-in for python:3.11-slim, for a machine that cannot pull from a
#               registry: Debian bookworm with its python3.11, made with debootstrap (kept in
#               PK_IMAGE_CHECK_CACHE, default /var/tmp/pk-image-check) and passed as PYTHON_IMAGE.
#               What it proves is the Dockerfile's steps, the wheel and what the image runs; the
#               real base differs in its Python build (3.11.x from python.org in /usr/local).
#   --keep      keep the image (localhost/patientkontrakt:check) and print its size
#
# PK_IMAGE_CHECK_DATABASE: the PostgreSQL server and maintenance database (default
# postgresql://postgres@127.0.0.1:5432/postgres); a database pk_image_check_<pid> is made on it
# and dropped at the end. Exits 1 naming every check that failed.
set -euo pipefail

root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
stand_in=false
keep=false
for arg in "$@"; do
    case "$arg" in
        --stand-in) stand_in=true ;;
        --keep) keep=true ;;
        *) echo "usage: deploy/check-image.sh [--stand-in] [--keep]" >&2; exit 2 ;;
    esac
done
for tool in buildah curl psql; do
    command -v "$tool" >/dev/null || { echo "check-image: $tool is not installed" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "check-image: run as root (buildah's chroot isolation, mounts)" >&2; exit 2; }

admin=${PK_IMAGE_CHECK_DATABASE:-postgresql://postgres@127.0.0.1:5432/postgres}
cache=${PK_IMAGE_CHECK_CACHE:-/var/tmp/pk-image-check}
database=pk_image_check_$$
image=localhost/patientkontrakt:check
work=$(mktemp -d /var/tmp/pk-image-check-run.XXXXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
url=postgresql+asyncpg://${admin#postgresql://}
url=${url%/*}/$database
failures=()
background=()
containers=()

cleanup() {
    for pid in "${background[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    sleep 1
    for pid in "${background[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    for container in "${containers[@]}"; do
        buildah umount "$container" >/dev/null 2>&1 || true
        buildah rm "$container" >/dev/null 2>&1 || true
    done
    $keep || buildah rmi "$image" >/dev/null 2>&1 || true
    psql -q "$admin" -c "DROP DATABASE IF EXISTS $database" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

check() {  # check DESCRIPTION COMMAND...: run it and report
    local what=$1
    shift
    if "$@"; then
        echo "ok    $what"
    else
        echo "FAIL  $what"
        failures+=("$what")
    fi
}

status_is() {  # status_is CODE PATH [CURL OPTIONS]
    local code=$1 path=$2
    shift 2
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" "$base$path")" = "$code" ]
}

wait_for() {  # wait_for SECONDS CODE PATH: until PATH answers CODE
    local deadline=$((SECONDS + $1))
    until status_is "$2" "$3"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 1
    done
}

# -- the base ---------------------------------------------------------------------------------

build_args=()
if $stand_in; then
    stand_in_image=localhost/pk-python-stand-in:3.11
    if ! buildah inspect --type image "$stand_in_image" >/dev/null 2>&1; then
        command -v debootstrap >/dev/null || { echo "check-image: --stand-in needs debootstrap" >&2; exit 2; }
        if [ ! -x "$cache/rootfs/usr/bin/python3.11" ]; then
            rm -rf "$cache/rootfs"
            mkdir -p "$cache"
            echo "check-image: debootstrap of Debian bookworm with python3.11 into $cache/rootfs"
            debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-pip,ca-certificates \
                bookworm "$cache/rootfs" http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 \
                || { echo "check-image: debootstrap failed ($cache/debootstrap.log)" >&2; exit 1; }
        fi
        container=$(buildah from scratch)
        containers+=("$container")
        mounted=$(buildah mount "$container")
        tar -C "$cache/rootfs" --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' \
            --exclude='./var/cache/apt/archives/*.deb' -cf - . | tar -C "$mounted" -xf -
        # python:3.11-slim's names for its Python, and this machine's certificate authorities
        # (pip in the build reaches the package index as this machine does)
        ln -sf /usr/bin/python3.11 "$mounted/usr/local/bin/python"
        ln -sf /usr/bin/python3.11 "$mounted/usr/local/bin/python3"
        cp /etc/ssl/certs/ca-certificates.crt "$mounted/etc/ssl/certs/ca-certificates.crt"
        buildah umount "$container" >/dev/null
        buildah config --env LANG=C.UTF-8 --cmd python3 "$container"
        buildah commit -q "$container" "$stand_in_image" >/dev/null
    fi
    build_args=(--pull=never --build-arg "PYTHON_IMAGE=$stand_in_image")
fi

# -- build ------------------------------------------------------------------------------------

echo "check-image: building deploy/Dockerfile (log: $work/build.log)"
if ! buildah bud --isolation chroot --format docker --layers=false "${build_args[@]}" \
        -f "$root/deploy/Dockerfile" -t "$image" "$root" >"$work/build.log" 2>&1; then
    tail -30 "$work/build.log" >&2
    echo "check-image: the image did not build" >&2
    exit 1
fi
echo "ok    the image builds"

config() { buildah inspect --type image --format "$1" "$image"; }
check "it runs as uid 10001, not root" [ "$(config '{{.Docker.Config.User}}')" = "10001:10001" ]
entrypoint=$(config '{{range .Docker.Config.Entrypoint}}{{.}} {{end}}')
check "its entrypoint is deploy/entrypoint.sh, api by default" \
    [ "$entrypoint$(config '{{range .Docker.Config.Cmd}}{{.}} {{end}}')" = "/app/deploy/entrypoint.sh api " ]
entrypoint=${entrypoint% }

container=$(buildah from "$image")
containers+=("$container")
settings=(--env "PK_DATABASE_URL=$url" --env "PK_BASE_URL=$base" --env "PK_BIND=127.0.0.1:$port")
run() {  # run [BUILDAH RUN OPTIONS] -- COMMAND...: in the container, as its user, on this host's network
    buildah run --isolation chroot --network host "$@"
}

run_quietly() { "$@" >>"$work/run.log" 2>&1; }

# the keys, made by the image's own commands where a secret would be mounted
mkdir -p "$work/keys" "$work/demo-keys"
chown 10001:10001 "$work/keys" "$work/demo-keys"
check "the image makes its keys" run_quietly run -v "$work/keys:/etc/patientkontrakt/keys" "$container" -- \
    sh -c 'patientkontrakt keys generate && patientkontrakt audit key --generate'
cp -p "$work/keys/"*.pem "$work/demo-keys/"
psql -q "$admin" -c "CREATE DATABASE $database"

# -- the entrypoint refuses without its settings ------------------------------------------------

set +e
run "$container" -- "$entrypoint" api >"$work/refused.log" 2>&1
code=$?
set -e
refused() { [ "$code" = 78 ] && grep -q "PK_DATABASE_URL: not set" "$work/refused.log"; }
check "without settings the entrypoint exits 78 naming them" refused

# -- migrate, api, worker -----------------------------------------------------------------------

check "migrate creates the schema" run_quietly run "${settings[@]}" "$container" -- "$entrypoint" migrate
check "the schema is at a migration" [ -n "$(psql -Atq "${admin%/*}/$database" -c 'SELECT version_num FROM alembic_version')" ]

# The API on a read-only root filesystem with a tmpfs on /tmp and the keys mounted read-only
# (docs/operations.md), as `docker run --read-only --tmpfs /tmp -v keys:...:ro` runs it: the
# container's filesystem is bind-mounted read-only in a mount namespace of its own and the
# entrypoint run in it by chroot, as the image's user, with the image's environment.
rootfs=$(buildah mount "$container")
user=$(config '{{.Docker.Config.User}}')
mkdir -p "$rootfs/etc/patientkontrakt/keys"
mapfile -t image_env < <(config '{{range .Docker.Config.Env}}{{println .}}{{end}}' | sed '/^$/d')
api_env=("${image_env[@]}" "PK_DATABASE_URL=$url" "PK_BASE_URL=$base" "PK_BIND=127.0.0.1:$port" "PK_WORKERS=2")
readonly_root=$work/root
mkdir -p "$readonly_root"
setsid unshare --mount --propagation private sh -c '
    set -e
    root=$1 from=$2 keys=$3 user=$4; shift 4
    mount --bind "$from" "$root"
    mount -o remount,bind,ro "$root"
    mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
    mount -t proc proc "$root/proc"
    mount --bind /dev "$root/dev"
    mount --bind -o ro "$keys" "$root/etc/patientkontrakt/keys"
    mount -o remount,bind,ro "$root/etc/patientkontrakt/keys"
    exec chroot --userspec="$user" "$root" env -i "$@" sh -c "cd /app && exec /app/deploy/entrypoint.sh api"
' sh "$readonly_root" "$rootfs" "$work/keys" "${user:-0:0}" "${api_env[@]}" >"$work/api.log" 2>&1 &
background+=($!)
check "the API (2 workers, read-only root) answers /healthz" wait_for 90 200 /healthz
check "/fhir/metadata answers 200" status_is 200 /fhir/metadata
check "a FHIR search without a token is refused (401)" status_is 401 /fhir/CarePlan
check "the patient e-service's page answers" status_is 200 /mitt
check "/readyz is 503 without a worker" status_is 503 /readyz

setsid buildah run --isolation chroot --network host "${settings[@]}" "$container" -- "$entrypoint" worker \
    >"$work/worker.log" 2>&1 &
background+=($!)
check "/readyz is 200 once the worker runs" wait_for 60 200 /readyz

health=$(config '{{range .Docker.Config.Healthcheck.Test}}{{println .}}{{end}}' | sed '/^$/d')
if [ "$(echo "$health" | head -1)" = CMD ]; then
    mapfile -t health_command < <(echo "$health" | tail -n +2)
    check "the image's HEALTHCHECK passes" run_quietly run "${settings[@]}" "$container" -- "${health_command[@]}"
else
    check "the image has an exec-form HEALTHCHECK" false
fi

# -- demo data, a token, a search, the access log -------------------------------------------

demo_keys=(-v "$work/demo-keys:/etc/patientkontrakt/keys")
check "the demo loads" run_quietly run "${settings[@]}" "${demo_keys[@]}" "$container" -- "$entrypoint" patientkontrakt demo
token=$(run "${settings[@]}" "${demo_keys[@]}" "$container" -- patientkontrakt token demo-ehr 2>>"$work/run.log" || true)
total=$(curl -s --max-time 10 -H "Authorization: Bearer $token" "$base/fhir/CarePlan?_summary=count" |
        python3 -c 'import json, sys; print(json.load(sys.stdin).get("total", 0))' 2>/dev/null || echo 0)
check "the demo EHR's token finds its agreements ($total)" [ "$total" -gt 0 ]
check "the access log verifies" run_quietly run "${settings[@]}" -v "$work/keys:/etc/patientkontrakt/keys:ro" \
    "$container" -- "$entrypoint" patientkontrakt audit verify
check "the image's user cannot write the service's files" \
    run "$container" -- sh -c '! touch /app/x 2>/dev/null && ! touch /opt/venv/x 2>/dev/null'

if $keep; then
    echo "check-image: kept $image ($(buildah images --format '{{.Size}}' "$image"))"
fi
if [ ${#failures[@]} -gt 0 ]; then
    echo "check-image: ${#failures[@]} check(s) failed (logs in $work: build.log, api.log, worker.log, run.log)" >&2
    for pid in "${background[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    cp -r "$work" "$work.failed" 2>/dev/null && echo "check-image: logs kept in $work.failed" >&2
    exit 1
fi
echo "check-image: every check passed"
