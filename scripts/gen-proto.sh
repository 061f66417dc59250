#!/usr/bin/env bash
# Generates TypeScript (ts-proto, NestJS-style interfaces, grpc-js services) and Python (grpcio-tools) code
# from proto/. Generated files are never edited by hand and never committed.
set -euo pipefail
cd "$(dirname "$0")/.."
TS_OUT=libs/proto/src/gen
PY_OUT=workers/inlaid_worker/gen
rm -rf "$PY_OUT" && mkdir -p "$PY_OUT"
PROTOS=$(cd proto && find . -name '*.proto' | sed 's|^\./||' | sort)
TS_ARGS=(--plugin=protoc-gen-ts_proto=../node_modules/.bin/protoc-gen-ts_proto --ts_proto_out=../$TS_OUT
  --ts_proto_opt=outputServices=grpc-js,esModuleInterop=true,useOptionals=messages,oneof=unions-value,forceLong=number,env=node)
# PROTO_LANGS=py generates the Python stubs only (the worker image has no Node).
if [ "${PROTO_LANGS:-ts,py}" = "py" ]; then TS_ARGS=(); else rm -rf "$TS_OUT" && mkdir -p "$TS_OUT"; fi
(cd proto && ../.venv/bin/python -m grpc_tools.protoc -I. "${TS_ARGS[@]}" \
  --python_out=../$PY_OUT --grpc_python_out=../$PY_OUT --pyi_out=../$PY_OUT \
  $PROTOS)
# grpcio-tools emits absolute imports (inlaid.v1.x_pb2); make the generated tree a package rooted at gen/.
find "$PY_OUT" -type d -exec touch {}/__init__.py \;
find "$PY_OUT" -name '*.py' -exec sed -i -E 's/^from inlaid\.v1 import/from inlaid_worker.gen.inlaid.v1 import/' {} \;
