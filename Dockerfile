# facerelay server image: build with the Rust toolchain, run on Debian slim.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends nasm && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin facerelay

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/target/release/facerelay /usr/local/bin/facerelay
COPY web ./web
COPY config ./config
EXPOSE 8080/tcp
CMD ["facerelay", "serve"]
