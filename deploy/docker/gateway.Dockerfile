# Gateway image: Node 20, built TypeScript, no dev dependencies at run time.
FROM node:20-bookworm-slim AS build
WORKDIR /app
# python3 runs grpcio-tools for scripts/gen-proto.sh. Distro packages follow the pinned base image tag; exact
# apt versions vanish from the archive on point releases.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json nx.json tsconfig*.json ./
COPY apps ./apps
COPY libs ./libs
COPY proto ./proto
COPY scripts ./scripts
RUN npm ci --no-audit --no-fund \
    && python3 -m venv .venv && .venv/bin/pip install --no-cache-dir grpcio-tools==1.76.0 \
    && bash scripts/gen-proto.sh && npx tsc -b tsconfig.build.json && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/apps ./apps
COPY --from=build /app/libs ./libs
COPY --from=build /app/package.json ./
# the image's `node` user, numerically (resolvable without the image's /etc/passwd)
USER 1000:1000
EXPOSE 8080 50051
CMD ["node", "apps/gateway/dist/main.js"]
