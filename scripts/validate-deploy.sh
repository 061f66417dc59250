#!/usr/bin/env bash
# Validates the Kubernetes manifests against the 1.30 schemas (kubernetes-validate, a pure-Python checker)
# in a throwaway venv. Docker itself cannot run on the development machines; see README "Deployment".
set -euo pipefail
cd "$(dirname "$0")/.."
V=${TMPDIR:-/tmp}/inlaid-kvenv
[ -x "$V/bin/kubernetes-validate" ] || { python3 -m venv "$V" && "$V/bin/pip" install -q kubernetes-validate==1.37.0; }
"$V/bin/kubernetes-validate" -k 1.30.0 --strict deploy/k8s/namespace.yaml deploy/k8s/config.yaml \
  deploy/k8s/gateway.yaml deploy/k8s/worker.yaml deploy/k8s/redis.yaml deploy/k8s/postgres.yaml
