#!/bin/sh
# The image's entrypoint (deploy/Dockerfile); runs as well outside a container, with the
# service's venv on PATH. One argument chooses what the container is:
#
#   api [GUNICORN OPTIONS]  the HTTP service: gunicorn with uvicorn workers (deploy/gunicorn.conf.py;
#                           PK_BIND, PK_WORKERS, PK_TIMEOUT). Needs a migrated database.
#   worker                  `patientkontrakt worker`: Subscription notifications and Bulk Data exports.
#   migrate                 `patientkontrakt migrate`: create or upgrade the schema, once per release.
#   anything else           run as given, e.g. `patientkontrakt audit verify` or `sh`.
#
# Before api, worker and migrate it checks the settings they cannot do without and exits 78
# (EX_CONFIG) naming every one that is missing, instead of falling back to the defaults meant for
# a developer's checkout (an SQLite file in the working directory, keys next to it).
set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
problems=""

missing() {  # missing NAME WHY: add a line to the report
    problems="${problems}
  $1: $2"
}

need_set() {  # need_set NAME...: each must be set and not empty
    for name in "$@"; do
        eval "value=\${$name:-}"
        [ -n "$value" ] || missing "$name" "not set (docs/operations.md, \"Configuration\")"
    done
}

need_file() {  # need_file NAME: a setting naming a file that must be readable
    eval "value=\${$1:-}"
    if [ -z "$value" ]; then
        missing "$1" "not set: the path of a PEM file (docs/operations.md, \"Keys\")"
    elif [ ! -r "$value" ]; then
        missing "$1" "cannot read $value (docs/operations.md, \"Keys\")"
    fi
}

refuse_if_missing() {  # refuse_if_missing MODE
    if [ -n "$problems" ]; then
        echo "entrypoint: refusing to start $1; missing settings:$problems" >&2
        exit 78
    fi
}

mode=${1:-api}
[ $# -eq 0 ] || shift

case "$mode" in
    api)
        need_set PK_DATABASE_URL PK_BASE_URL
        need_file PK_SIGNING_KEY
        need_file PK_AUDIT_KEY
        refuse_if_missing api
        exec gunicorn -c "${PK_GUNICORN_CONFIG:-$here/gunicorn.conf.py}" "$@" "api.app:create_app()"
        ;;
    worker)
        need_set PK_DATABASE_URL PK_BASE_URL
        refuse_if_missing worker
        exec patientkontrakt worker "$@"
        ;;
    migrate)
        need_set PK_DATABASE_URL
        refuse_if_missing migrate
        exec patientkontrakt migrate "$@"
        ;;
    *)
        exec "$mode" "$@"
        ;;
esac
