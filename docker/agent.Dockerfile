# syntax=docker/dockerfile:1
#
# The kubelan image: one static binary, used as the in-cluster agent (`kubelan agent`, the
# container args `kubelan install` writes) and usable for any other kubelan command.
#
#   docker build -f docker/agent.Dockerfile -t ghcr.io/kubelan/kubelan:$(version) .
#
# Build stage: Alpine's Rust targets musl and links statically by default, so the binary
# runs on distroless/static (no libc).
FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev gcc make
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kubelan \
    && cp target/release/kubelan /kubelan \
    && ! ldd /kubelan 2>/dev/null | grep -q 'so\.'

# Runtime stage: no shell, no package manager; uid/gid 65532 as the agent's Pod Security
# context (`runAsNonRoot`, `runAsUser: 65532`) expects.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /kubelan /kubelan
USER 65532:65532
EXPOSE 7443 7440
ENTRYPOINT ["/kubelan"]
