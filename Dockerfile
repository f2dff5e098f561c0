# syntax=docker/dockerfile:1
# Image of the sequencer: the server and the admin CLI (the operator's migration Job runs
# `stateset-sequencer-admin migrate` from this same image). Build from the repository root:
#   docker build -t ghcr.io/stateset/stateset-sequencer:0.1.0 .
# (or `podman build`). The tag is the workspace version (Cargo.toml), which is the operator's default
# `spec.image`; operator/tests/image.rs keeps them in step.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep crates and build output between builds (BuildKit and podman/buildah).
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    cargo build --release --locked -p stateset-sequencer \
      --bin stateset-sequencer --bin stateset-sequencer-admin \
 && mkdir /out \
 && cp target/release/stateset-sequencer target/release/stateset-sequencer-admin /out/

# The binaries need glibc (distroless "cc") and nothing else: TLS is rustls with webpki roots, the
# database is named by DATABASE_URL. They run as the image's non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/stateset-sequencer /usr/local/bin/stateset-sequencer
COPY --from=build /out/stateset-sequencer-admin /usr/local/bin/stateset-sequencer-admin
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/stateset-sequencer"]
