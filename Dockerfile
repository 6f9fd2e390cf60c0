# Production image. No embedded database here: set MONGODB_URL to a MongoDB server.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY pyproject.toml /src/
COPY app /src/app
RUN pip install --no-cache-dir /src && rm -rf /src

# DATA_DIR keeps the generated signing secret when APP_SECRET is not set.
RUN useradd --system --create-home --uid 10001 app \
    && mkdir -p /data \
    && chown app:app /data

USER app
WORKDIR /home/app
ENV HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000

CMD ["python", "-m", "app"]
