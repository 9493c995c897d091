FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY smsdispatch ./smsdispatch
RUN pip install . && useradd --system --uid 10001 smsdispatch
USER smsdispatch
CMD ["celery", "-A", "smsdispatch.worker", "worker", "--pool", "threads", "--concurrency", "20", "--loglevel", "INFO"]
