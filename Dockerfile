# Multi-stage build of both binaries the README uses: `streamflix` (the processor) and
# `streamflix-replay` (the replay tool), with the README's release build, restricted to those two
# packages and the committed Cargo.lock.
FROM rust:1.89-bookworm AS build
# librdkafka is built from source by the rdkafka crate with its ./configure script (no cmake):
# make, a C/C++ compiler, perl and zlib headers, all in the rust:bookworm image.
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p streamflix -p streamflix-replay \
    && cp target/release/streamflix target/release/streamflix-replay /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home streamflix
COPY --from=build /usr/local/bin/streamflix /usr/local/bin/streamflix-replay /usr/local/bin/
USER streamflix
WORKDIR /home/streamflix
EXPOSE 8080
ENTRYPOINT ["streamflix"]
CMD ["demo", "--http", "0.0.0.0:8080"]
