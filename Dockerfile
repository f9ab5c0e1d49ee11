# syntax=docker/dockerfile:1
# One image with Crane's binaries: crane-operator (the controller), crane-executor (planner and
# worker Jobs) and crane-server (the runs API, the UI, the archive reader), which the chart runs
# (image.repository, executor.image defaults to it), and kubectl-crane (the kubectl plugin),
# shipped for copying out onto a PATH:
#   docker cp "$(docker create ghcr.io/crane-dev/crane:0.1.0)":/usr/local/bin/kubectl-crane .
#
#   docker build -t ghcr.io/crane-dev/crane:0.1.0 .
#       compiles the binaries in the `compile` stage (Rust on Debian 12, the base's glibc);
#   podman build --build-arg BINARIES=prebuilt -t crane:dev DIR
#       copies DIR/bin/crane-operator, crane-executor, crane-server and kubectl-crane, built
#       beforehand on a glibc no newer than Debian 12's. The local cluster does this (e2e/cluster/images.sh) with the
#       binaries `make build` made, so its pods run this file's final stage.
# Only the stage BINARIES names is built; the final stage is the same either way.
ARG BINARIES=compile

FROM rust:1.89-bookworm AS compile
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p crane-operator -p crane-executor -p crane-server -p kubectl-crane \
 && install -D -m 0755 target/release/crane-operator /out/crane-operator \
 && install -D -m 0755 target/release/crane-executor /out/crane-executor \
 && install -D -m 0755 target/release/crane-server /out/crane-server \
 && install -D -m 0755 target/release/kubectl-crane /out/kubectl-crane

FROM scratch AS prebuilt
COPY bin/crane-operator bin/crane-executor bin/crane-server bin/kubectl-crane /out/

FROM ${BINARIES} AS binaries

# glibc + libgcc and nothing else (no shell, no package manager); user 65532 "nonroot".
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=binaries /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/crane-operator"]
