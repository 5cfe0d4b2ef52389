# syntax=docker/dockerfile:1
# Kastor's images, one target each (as KubeRay ships an operator image apart from the Ray image):
#   docker build --target runtime  -t kastor:dev .            # head, workers, DetachedActor pods, drivers
#   docker build --target operator -t kastor-operator:dev .   # the operator (kopf + the kubernetes client)
#   docker build --target demo     -t kastor-demo:dev .       # runtime + examples/*.py (the quick start's bank:Account)
# Your own actor code goes in an image of your own, `FROM kastor:<version>` plus `COPY`, not on
# a PYTHONPATH that every pod shares.
#
# The base is pinned to a patch release of Python on one Debian release; pin it to a digest
# (python:3.11.11-slim-bookworm@sha256:...) in a release pipeline. Each image installs its
# dependencies from pyproject.toml's ranges within constraints.txt's exact versions *before* it
# takes Kastor itself, which the `wheel` stage builds once, from the source alone, for both
# images: a source change rebuilds the wheel and each image's last, small layer, never the
# dependency layers.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# tini is PID 1: it forwards signals to Kastor and reaps the orphans that the processes a
# node agent starts (workers, their children) leave behind when they die.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 1000 --user-group --home-dir /home/kastor --create-home kastor
WORKDIR /opt/kastor
COPY pyproject.toml constraints.txt ./
# `requirements <extra>...` prints pyproject.toml's dependencies (and those of the extras named).
RUN printf '%s\n' \
      'import sys, tomllib' \
      'p = tomllib.load(open("pyproject.toml", "rb"))["project"]' \
      'print("\n".join(p["dependencies"] + [d for e in sys.argv[1:] for d in p["optional-dependencies"][e]]))' \
      > /usr/local/bin/requirements.py

# ---- wheel: Kastor itself, built once for both images from the source alone ----
FROM base AS wheel
COPY README.md ./
COPY client ./client
COPY runtime ./runtime
COPY operator ./operator
RUN pip wheel --no-deps --wheel-dir /opt/kastor/dist .

# ---- runtime: Kastor without the operator's dependencies ----
FROM base AS runtime-deps
RUN python /usr/local/bin/requirements.py > requirements.txt \
    && pip install -r requirements.txt -c constraints.txt

FROM runtime-deps AS runtime
COPY --from=wheel /opt/kastor/dist/ /tmp/kastor-dist/
RUN pip install --no-deps /tmp/kastor-dist/*.whl && rm -rf /tmp/kastor-dist
USER 1000:1000
WORKDIR /home/kastor
# Pods set the command: `kastor start --head ...`, `kastor start --address ...`, `kastor actor-pod ...`.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["kastor", "--help"]

# ---- demo: the runtime plus examples/*.py, for the quick start (DetachedActor bank:Account) ----
FROM runtime AS demo
COPY examples/*.py /opt/kastor/demo/
ENV PYTHONPATH=/opt/kastor/demo

# ---- operator: the runtime's dependencies plus the `operator` extra (kopf, kubernetes) ----
FROM runtime-deps AS operator-deps
RUN python /usr/local/bin/requirements.py operator > requirements.txt \
    && pip install -r requirements.txt -c constraints.txt

FROM operator-deps AS operator
COPY --from=wheel /opt/kastor/dist/ /tmp/kastor-dist/
RUN pip install --no-deps /tmp/kastor-dist/*.whl && rm -rf /tmp/kastor-dist
USER 1000:1000
WORKDIR /home/kastor
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "kastor.operator"]
