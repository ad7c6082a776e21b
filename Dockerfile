# One image for all four services; the command picks the service (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
# The code also runs from /app (python -m puts the working directory first on sys.path), so each
# service's Alembic scripts are found beside it whatever the wheel's package data holds.
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home --home-dir /app app \
    && mkdir -p /app/var \
    && chown app /app/var

USER app

EXPOSE 8001 8002 8003 8004
CMD ["python", "-m", "services", "serve", "intake"]
