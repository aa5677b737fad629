#!/bin/bash
# Docker HEALTHCHECK of the Kassa image: GET /healthz on the port of KASSA_LISTEN (default 8080)
# and succeed only on HTTP 200. Plain bash over /dev/tcp, so the runtime image needs no curl.
# Usage: kassa-healthcheck [path]   (path defaults to /healthz; /readyz also works)
set -euo pipefail
listen=${KASSA_LISTEN:-0.0.0.0:8080}
port=${listen##*:}
path=${1:-/healthz}
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
IFS= read -r -t 2 status <&3
exec 3<&- 3>&-
case "$status" in
  "HTTP/1."[01]" 200 "*) exit 0 ;;
  *) echo "kassa-healthcheck: ${path} answered: ${status:-nothing}" >&2; exit 1 ;;
esac
