# One image for every Python service of the stack: the ingress, the workers and rq-dashboard
# differ only by their command (see docker-compose.yml and deploy/k8s/).
# The base is a build argument, so a registry mirror or a hardened base needs no edit:
#   docker build --build-arg PYTHON_IMAGE=registry.example.com/python:3.12-slim .
# (compose passes PYTHON_IMAGE from .env). Any Debian-based image with `python` (>= 3.11, with
# venv) on PATH and apt-get works; the compose test builds from Debian bookworm's python3.
ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# tini as PID 1: it forwards SIGTERM to the service (an RQ worker's warm shutdown, uvicorn's
# graceful stop) and reaps children. rq-dashboard's Flask server would ignore SIGTERM as PID 1.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && python -m venv "$VIRTUAL_ENV" \
    && groupadd --system --gid 10001 lswh \
    && useradd --system --uid 10001 --gid lswh --no-create-home --home-dir /nonexistent lswh

WORKDIR /src

# Dependencies first, read from pyproject.toml alone: this layer is rebuilt only when they change,
# not on every code edit. [project].dependencies only: the dev, test and lint extras stay out.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The package itself, without touching the dependencies installed above.
COPY . .
RUN pip install --no-deps . \
    && rm -rf /src

WORKDIR /app
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

# No secret is baked in: LSWH_SECRETS, LANGSMITH_API_KEY and RQ_DASHBOARD_PASSWORD come from the
# environment at run time (.env with compose, a Secret in Kubernetes).
EXPOSE 8000 9181
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["lswh", "ingress", "--host", "0.0.0.0", "--port", "8000"]
