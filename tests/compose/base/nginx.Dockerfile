# Stands in for nginx:1.28-alpine: Debian's nginx (1.22), logs to the container's output, in the
# foreground, as the official image runs it.
ARG BASE
FROM ${BASE}
RUN apt-get update \
    && apt-get install -y nginx \
    && rm -rf /var/lib/apt/lists/* \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 443
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
