# Stands in for prom/prometheus: Debian's prometheus, with the official image's interface
# (entrypoint the binary, data in /prometheus, user nobody).
ARG BASE
FROM ${BASE}
RUN apt-get update \
    && apt-get install -y prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus /etc/prometheus \
    && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
