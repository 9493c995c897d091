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
CMD ["celery", "-A", "smsdispatch.worker", "worker", "--pool", "threads", "--concurrency", "20", "--loglevel", "INFO"]
