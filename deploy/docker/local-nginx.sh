#!/bin/sh
# An nginx image for the compose scale profile on machines that cannot pull nginx:1.28-alpine:
# Debian's nginx-light on a local base (deploy/docker/local-base.sh), run the way the official
# image runs it (master in the foreground, SIGQUIT for a graceful stop), with wget for compose's
# health check. Use it with CONVSCOPE_NGINX_IMAGE=convscope-nginx:bookworm docker compose ...
# Usage: local-nginx.sh [BASE [NAME]]; needs the Debian mirror (the build uses --network host).
set -eu
base="${1:-convscope-base:bookworm}"
name="${2:-convscope-nginx:bookworm}"
# The root filesystem is read-only under compose: the temp folders nginx checks at start (its
# compiled-in /var/lib/nginx/*) exist already and belong to the workers' user (nobody: Debian
# builds nginx without --user), so nginx has nothing to create or chown; logs go to the output.
docker build --quiet --network host --build-arg BASE="$base" -t "$name" - <<'DOCKERFILE' >/dev/null
ARG BASE
FROM ${BASE}
RUN apt-get update \
    && apt-get install --yes --no-install-recommends nginx-light wget \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \
    && mkdir -p /var/lib/nginx/body /var/lib/nginx/proxy /var/lib/nginx/fastcgi \
        /var/lib/nginx/uwsgi /var/lib/nginx/scgi \
    && chown -R nobody:nogroup /var/lib/nginx \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
DOCKERFILE
echo "local-nginx.sh: $name ($(docker run --rm --network none "$name" nginx -v 2>&1))"
