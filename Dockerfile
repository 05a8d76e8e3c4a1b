# Realtime chat backend: `manage.py migrate` then `manage.py serve` (uvicorn).
# Configure with environment variables (README.md, "Configuration"); at least
# SECRET_KEY, and DATABASE_URL / REDIS_URL for PostgreSQL and Redis.

# --- builder: the runtime dependencies in a virtualenv ---------------------------
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

COPY requirements.txt /tmp/requirements.txt
RUN pip install --upgrade pip \
 && pip install -r /tmp/requirements.txt

# --- final: the virtualenv and the code, run as a non-root user ------------------
FROM python:3.11-slim

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000

# /app itself belongs to the app user: SQLite (the default without DATABASE_URL)
# creates db.sqlite3 and its WAL files next to the code.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
 && mkdir /app && chown app:app /app

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
COPY --chown=app:app . /app

USER app

EXPOSE 8000

CMD ["sh", "-c", "python manage.py migrate --noinput && exec python manage.py serve"]
