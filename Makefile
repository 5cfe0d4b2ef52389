# Developer entry points. CI runs .ci/run (the README's test command).
PYTHON ?= python
KIND_CLUSTER ?= kastor-e2e
IMAGE ?= kastor:dev
OPERATOR_IMAGE ?= kastor-operator:dev

.PHONY: test lint docs e2e image kind-up kind-down helm-lint

test:
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check .

# The docs site (docs/, mkdocs.yml) into site/; strict, as CI builds it.
docs:
	$(PYTHON) -m mkdocs build --strict

# kind + Docker end to end: creates the kind cluster, builds and loads the image,
# helm-installs the operator, runs an ActorCluster and a DetachedActor (skips without kind/docker).
e2e:
	$(PYTHON) -m pytest -q -m e2e -rs tests/e2e

# The runtime image (head, workers, actors) and the operator image: two targets of one Dockerfile.
image:
	docker build --target runtime -t $(IMAGE) .
	docker build --target operator -t $(OPERATOR_IMAGE) .

kind-up:
	kind create cluster --name $(KIND_CLUSTER) --config kind-config.yaml

kind-down:
	kind delete cluster --name $(KIND_CLUSTER)

helm-lint:
	helm lint --strict charts/kastor-operator charts/kastor-cluster
