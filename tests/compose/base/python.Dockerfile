# Stands in for python:3.12-slim: Debian's python3 (3.11) with `python` on PATH and venv.
ARG BASE
FROM ${BASE}
COPY ca-bundle.crt /usr/local/share/lswh-ci/ca-bundle.crt
RUN apt-get update \
    && apt-get install -y python3 python3-venv python-is-python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && printf '[global]\ncert = /usr/local/share/lswh-ci/ca-bundle.crt\n' > /etc/pip.conf
CMD ["python3"]
