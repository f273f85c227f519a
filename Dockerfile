# facerelay server image: built with the Rust toolchain, run on Debian slim with ONNX Runtime and
# the packaged model set installed by the project's own scripts, the same ones scripts/setup.sh
# runs on a host (scripts/check-image.sh, run by scripts/test.sh, fails if anything else
# installs them here).
#
#   docker build -t facerelay:cpu .                              ONNX Runtime for the CPU
#   docker build --build-arg ORT_FLAVOUR=gpu -t facerelay:gpu .  onnxruntime-gpu with the CUDA 13
#                                                               and cuDNN 9 libraries (PyPI
#                                                               wheels); the driver comes from
#                                                               the host
#   docker run --rm -p 8080:8080 facerelay:cpu
#   docker run --rm --gpus all -e FACERELAY_MODELS__PROVIDER=cuda -p 8080:8080 facerelay:gpu
#
# Paths (working directory /app, so the relative defaults of config/default.toml hold): the
# ONNX Runtime library in /app/.deps/onnxruntime/lib/ (models.onnxruntime_library), the packaged
# set in /app/models/packaged/ (models.packaged_dir), the web page in /app/web/. The deep
# swapper's files (models/README.md) go in the volume /models: place them there, or run
# `facerelay models fetch` in the container. The image sets FACERELAY_MODELS__DIR=/models and
# FACERELAY_SERVER__LISTEN=0.0.0.0:8080 in its environment, which wins over a --config file;
# change them with -e. docker-compose.yml and docs/deploy.md run it with Redis, Caddy and TURN.

FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends nasm libopus-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin facerelay

FROM debian:bookworm-slim
# What the two install scripts need (Python and pip fetch the PyPI wheels and run the converters,
# venv holds the converters' pinned packages), and curl for the health check.
RUN apt-get update && apt-get install -y --no-install-recommends \
        ca-certificates curl libopus0 python3 python3-pip python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# The install scripts and what they read: the model converters and their pinned requirements,
# and the manifest that every packaged file is checked against.
COPY scripts ./scripts
COPY tools ./tools
COPY models/manifest.toml ./models/manifest.toml
# The converters' venv, the downloaded archives and pip's cache are not needed at run time.
RUN scripts/install-packaged-models.sh \
    && rm -rf .deps/venv-models .deps/packaged-sources /root/.cache
# cpu or gpu: the argument of scripts/install-onnxruntime.sh. Declared here, after the steps both
# flavours share, so that those stay cached across flavours.
ARG ORT_FLAVOUR=cpu
RUN scripts/install-onnxruntime.sh "${ORT_FLAVOUR}" && rm -rf /root/.cache
COPY --from=build /src/target/release/facerelay /usr/local/bin/facerelay
COPY web ./web
COPY config ./config
# /app/.deps writable: `facerelay models prepare` sets up its Python packages there.
RUN useradd --system --uid 10001 --create-home --home-dir /home/facerelay facerelay \
    && mkdir -p /models && chown facerelay /models /app/.deps
VOLUME ["/models"]
ENV FACERELAY_MODELS__DIR=/models \
    FACERELAY_SERVER__LISTEN=0.0.0.0:8080 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER facerelay
EXPOSE 8080/tcp
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
CMD ["facerelay", "serve"]
