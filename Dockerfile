# syntax=docker/dockerfile:1
# bastion as a container: `bastion serve` as an unprivileged user, data in a volume.
# Walkthrough and run examples: docs/deployment.md ("Docker").

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/bastion
# Only what the package is built from; .dockerignore keeps the rest out of the context.
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
# Exactly the versions CI tested.
RUN /opt/bastion/bin/pip install -c constraints.txt .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/bastion/bin:$PATH \
    BASTION_DATA_DIR=/var/lib/bastion
# BASTION_ALLOWED_HOSTS defaults to 127.0.0.1,localhost: set it to the name clients use
# (docker run -e BASTION_ALLOWED_HOSTS=api.example.com), or requests from outside get 400.
RUN groupadd --system --gid 10001 bastion \
    && useradd --system --uid 10001 --gid bastion --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin bastion \
    && install -d -m 0700 -o bastion -g bastion /var/lib/bastion
COPY --from=build /opt/bastion /opt/bastion
# Root-owned, so the service cannot drop a .env where it would read it.
WORKDIR /opt/bastion
VOLUME ["/var/lib/bastion"]
USER 10001:10001
EXPOSE 8000
# Liveness: GET /health/live with the first exact allowed host as Host (the slim image has no
# curl); healthy on 200.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import http.client, os, sys; hosts = [h.strip() for h in os.environ.get('BASTION_ALLOWED_HOSTS', '127.0.0.1').split(',') if h.strip() and '*' not in h]; connection = http.client.HTTPConnection('127.0.0.1', 8000, timeout=4); connection.request('GET', '/health/live', headers={'Host': hosts[0] if hosts else '127.0.0.1'}); sys.exit(connection.getresponse().status != 200)"]
CMD ["bastion", "serve", "--host", "0.0.0.0", "--port", "8000"]
