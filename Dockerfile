# One image for the operator, the head, workers and DetachedActor pods.
#   docker build -t kastor:dev .
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # Kastor's examples are importable by DetachedActors (e.g. actorClass: bank:Account)
    PYTHONPATH=/opt/kastor/examples

WORKDIR /opt/kastor
COPY pyproject.toml README.md ./
COPY client ./client
COPY runtime ./runtime
COPY operator ./operator
COPY examples ./examples
RUN pip install ".[operator]" \
    && useradd --uid 1000 --user-group --home-dir /home/kastor --create-home kastor \
    && rm -rf /root/.cache

USER 1000:1000
WORKDIR /home/kastor
# Pods override the command: `kastor start --head ...`, `kastor start --address ...`,
# `kastor actor-pod ...` or `python -m kastor.operator ...`.
ENTRYPOINT []
CMD ["kastor", "--help"]
