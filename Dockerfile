# signer-sync: the daemon (`signer-sync run`) by default; any subcommand as the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY signer_sync ./signer_sync
COPY migrations ./migrations
# Editable on purpose: signer_sync/warehouse/db.py finds the migrations next to the package
# (Path(__file__).parents[2] / "migrations" = /app/migrations); a plain `pip install .`
# would put the package in site-packages, away from them. The check fails the build if not.
RUN pip install -e . \
    && python -c "from signer_sync.warehouse.db import MIGRATIONS_DIR as m; \
assert (m / 'env.py').is_file(), m; print('migrations at', m)"

# Not root. /data is the working directory, so the default SQLite file is writable there.
RUN useradd --system --uid 10001 --user-group --home-dir /data --create-home signer
USER 10001:10001
WORKDIR /data

# /metrics and /healthz; the listener binds loopback unless SIGNER_SYNC_HTTP_ADDR says
# otherwise (docker-compose.yml sets 0.0.0.0:9108). The check works either way.
EXPOSE 9108
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4)"]

ENTRYPOINT ["signer-sync"]
CMD ["run"]
