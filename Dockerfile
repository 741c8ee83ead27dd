# Flint's three binaries, built once; pick one with --target:
#   docker build --target watchdog -t ghcr.io/flint-dev/watchdog .
#   docker build --target flint-gateway -t ghcr.io/flint-dev/flint-gateway .
#   docker build --target flint-operator -t ghcr.io/flint-dev/flint-operator .
# Runtime images are distroless (glibc, libgcc, CA certificates, time zones; no shell) and run
# as user 65532. `scripts/images` builds the same images without Docker (see README, "Images").
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p flint-watchdog -p flint-gateway -p flint-operator

FROM gcr.io/distroless/cc-debian12:nonroot AS watchdog
COPY --from=build /src/target/release/watchdog /usr/local/bin/watchdog
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/watchdog"]

FROM gcr.io/distroless/cc-debian12:nonroot AS flint-gateway
COPY --from=build /src/target/release/flint-gateway /usr/local/bin/flint-gateway
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/flint-gateway"]

FROM gcr.io/distroless/cc-debian12:nonroot AS flint-operator
COPY --from=build /src/target/release/flint-operator /usr/local/bin/flint-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/flint-operator"]
