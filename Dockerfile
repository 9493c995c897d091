# A pinned base (a patch version, not a floating tag) and pinned, hash-checked dependencies
# (requirements.lock): a rebuild installs the same bytes, or fails.
FROM python:3.11.13-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY smsdispatch ./smsdispatch
# The package itself: its dependencies (with the flower and metrics extras) are all in the lock already.
RUN pip install --no-deps --no-build-isolation . && useradd --system --uid 10001 smsdispatch
USER smsdispatch
# The image runs a worker unless told otherwise: healthy while it answers Celery's ping, its own node
# (celery@<container hostname>) within a second. Compose gives beat, Flower, the webhook receiver and
# the metrics server checks of their own. `|| exit 1`: Docker reserves exit code 2, our usage error.
HEALTHCHECK --interval=30s --timeout=20s --start-period=60s --retries=3 \
    CMD smsdispatch health workers --node "celery@$HOSTNAME" || exit 1
CMD ["celery", "-A", "smsdispatch.worker", "worker", "--pool", "threads", "--concurrency", "20", "--loglevel", "INFO"]
