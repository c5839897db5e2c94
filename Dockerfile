# The pipeline image: every role (worker, sink, ingestors, alerter, simulators) is a
# `pipeline` command. Built by docker-compose.yml (`build: .`).
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY pipeline ./pipeline
COPY topics ./topics
# gcc for the compiled hot modules (setup.py; docs/design.md, "Compiled hot modules"), removed
# once the package is built: without it the worker runs pure Python at ~1.4x the CPU.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir /src \
    && apt-get purge -y --auto-remove gcc libc6-dev && rm -rf /var/lib/apt/lists/* \
    && pipeline --version \
    && useradd --create-home jobstream && mkdir /data && chown jobstream /data
USER jobstream
WORKDIR /data
ENTRYPOINT ["pipeline"]
CMD ["--help"]
