# Stands in for redis:7.4-alpine: Debian's redis-server, plain. No entrypoint script: protected
# mode stays on unless the compose command turns it off (what the compose file must state).
ARG BASE
FROM ${BASE}
RUN apt-get update \
    && apt-get install -y redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data
WORKDIR /data
EXPOSE 6379
CMD ["redis-server"]
