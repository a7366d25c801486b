# The LangSmith stand-in (standin/, distribution lswh-standin) as its own image for the compose
# test: the stand-in alone on the same python base as the project image; the product is not in
# it, and the project image does not carry the stand-in. The build context is standin/:
#   docker build --network host --build-arg PYTHON_IMAGE=... -f tests/compose/standin.Dockerfile standin
# (tests/test_compose.py passes its local bookworm python base, whose /etc/pip.conf names the CA
# bundle pip needs).
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY . .
RUN python -m venv "$VIRTUAL_ENV" \
    && pip install . \
    && rm -rf /src

WORKDIR /app
USER 10001:10001
EXPOSE 1984
CMD ["python", "-m", "lswh_standin", "--host", "0.0.0.0", "--port", "1984", "--preload-fixture", "--no-limits"]
