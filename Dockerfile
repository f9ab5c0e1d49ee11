# syntax=docker/dockerfile:1
# One image with both binaries: crane-operator (the controller) and crane-executor (planner and
# worker Jobs). The chart runs both from it (image.repository, executor.image defaults to it).
#   docker build -t ghcr.io/crane-dev/crane:0.1.0 .
# Not built in this repository's CI: the development machines have no container engine.

FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p crane-operator -p crane-executor \
 && install -D -m 0755 target/release/crane-operator /out/crane-operator \
 && install -D -m 0755 target/release/crane-executor /out/crane-executor

# glibc + libgcc and nothing else (no shell, no package manager); user 65532 "nonroot".
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/crane-operator"]
