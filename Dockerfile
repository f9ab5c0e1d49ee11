# syntax=docker/dockerfile:1
# One image with Crane's binaries: crane-operator (the controller) and crane-executor (planner and
# worker Jobs), which the chart runs (image.repository, executor.image defaults to it), and
# kubectl-crane (the kubectl plugin), shipped for copying out onto a PATH:
#   docker cp "$(docker create ghcr.io/crane-dev/crane:0.1.0)":/usr/local/bin/kubectl-crane .
#   docker build -t ghcr.io/crane-dev/crane:0.1.0 .
# Not built in this repository's CI: the development machines have no container engine.

FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p crane-operator -p crane-executor -p kubectl-crane \
 && install -D -m 0755 target/release/crane-operator /out/crane-operator \
 && install -D -m 0755 target/release/crane-executor /out/crane-executor \
 && install -D -m 0755 target/release/kubectl-crane /out/kubectl-crane

# glibc + libgcc and nothing else (no shell, no package manager); user 65532 "nonroot".
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/crane-operator"]
