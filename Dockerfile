# The pipeline image: every role (worker, sink, ingestors, alerter, simulators) is a
# `pipeline` command. Built by docker-compose.yml (`build: .`).
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY pipeline ./pipeline
COPY topics ./topics
RUN pip install --no-cache-dir /src && useradd --create-home jobstream && mkdir /data && chown jobstream /data
USER jobstream
WORKDIR /data
ENTRYPOINT ["pipeline"]
CMD ["--help"]
