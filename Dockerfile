# syntax=docker/dockerfile:1
# One image for every statsworker process; docker-compose.yml picks the command
# (api, worker, roll, migrate). Build: docker build -t statsworker .
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/statsworker \
 && /opt/statsworker/bin/pip install --no-cache-dir --quiet --upgrade "pip>=24"
# constraints.txt pins every dependency when the project ships one (the glob lets the
# build go on without it).
COPY pyproject.toml README.md constraints.tx[t] ./
COPY events ./events
COPY stats ./stats
COPY worker ./worker
COPY api_stub ./api_stub
# `statsworker --help` imports every sub-command: a module left out of the package
# fails the build here rather than a container at run time.
RUN if [ -f constraints.txt ]; then pins="-c constraints.txt"; else pins=""; fi \
 && /opt/statsworker/bin/pip install --no-cache-dir --quiet $pins . \
 && /opt/statsworker/bin/statsworker --help > /dev/null

FROM python:3.11-slim
ENV PATH=/opt/statsworker/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STATSWORKER_LOG_FORMAT=json
RUN useradd --create-home --uid 10001 statsworker
COPY --from=build /opt/statsworker /opt/statsworker
USER statsworker
WORKDIR /home/statsworker
EXPOSE 8000
CMD ["statsworker", "api", "--host", "0.0.0.0", "--port", "8000"]
