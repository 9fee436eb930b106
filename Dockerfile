# The watcher daemon (`watcher serve`) and the demo traffic generator (`watcher traffic`).
# Build: docker build -t watcher .   Run: see docker-compose.yml and docs/deploy.md.
FROM python:3.11.11-slim-bookworm

# MALLOC_ARENA_MAX: the daemon runs a thread per connection; without a cap glibc gives threads arenas of
# their own, each keeping the memory of the exports it decoded.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The package with its `postgres` extra (psycopg, with libpq in its wheel), so the same image runs a
# daemon on SQLite or one of a fleet on PostgreSQL (WATCHER_DATABASE_URL); without its test extras, and
# the source tree is not kept in the image.
COPY pyproject.toml README.md /src/
COPY watcher /src/watcher
RUN pip install "/src[postgres]" && rm -rf /src

# An unprivileged user owns the ledger and state; mount a volume on /var/lib/watcher to keep them.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/watcher --shell /usr/sbin/nologin watcher \
    && mkdir -p /var/lib/watcher /etc/watcher \
    && chown watcher:watcher /var/lib/watcher
ENV WATCHER_STATE_DIR=/var/lib/watcher
VOLUME ["/var/lib/watcher"]
USER watcher
WORKDIR /var/lib/watcher

# 4318: OTLP/HTTP, kill-switch and budgets API, /metrics, /healthz. 4317: OTLP/gRPC.
EXPOSE 4318 4317

# /healthz needs no token; it answers 503 (unhealthy) while the ledger cannot commit (docs/api.md).
# WATCHER_HEALTHCHECK_URL overrides the address (a daemon on another port).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('WATCHER_HEALTHCHECK_URL', 'http://127.0.0.1:4318/healthz'), timeout=4)"]

ENTRYPOINT ["watcher"]
CMD ["serve", "--config", "/etc/watcher/watcher.toml"]
