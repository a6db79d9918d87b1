# Build:  docker build -t portico .
# Run:    docker run -p 80:80 -p 443:443 -v $PWD/portico.toml:/etc/portico/portico.toml -v portico-acme:/var/lib/portico portico
# Reload: docker kill -s HUP CONTAINER   (stop: docker stop drains for shutdown_timeout)
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/portico ./cmd/portico \
 && mkdir -p /out/var/lib/portico/acme
# Belt and braces for binding 80/443 as non-root: the file capability covers
# runtimes that keep the default unprivileged-port sysctl (e.g. host network).
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends libcap2-bin \
 && setcap cap_net_bind_service=+ep /out/portico

# distroless/static has CA roots and tzdata, no shell, and a nonroot user (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/portico /usr/local/bin/portico
COPY --from=build --chown=65532:65532 /out/var/lib/portico /var/lib/portico
COPY config.example.toml /etc/portico/portico.toml
USER 65532:65532
# Docker also sets net.ipv4.ip_unprivileged_port_start=0 in a container's own
# network namespace, so the non-root user binds 80 and 443 either way.
EXPOSE 80 443
VOLUME ["/var/lib/portico"]
ENTRYPOINT ["/usr/local/bin/portico"]
CMD ["run", "-config", "/etc/portico/portico.toml"]
