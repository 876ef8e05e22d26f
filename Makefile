# The two commands of README: `make serve` and `make test`. Each installs
# what it needs first (once; again when pyproject.toml changes).
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: install serve prepare-model test lint unit deploy-check

$(STAMP): pyproject.toml scripts/install.sh scripts/system-packages.txt
	bash scripts/install.sh
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/divconq serve

prepare-model: $(STAMP)
	$(VENV)/bin/divconq prepare-model

lint: $(STAMP)
	$(VENV)/bin/ruff check service tests benchmarks
	$(VENV)/bin/ruff format --check service tests benchmarks
	$(VENV)/bin/mypy

# The fast tier, in process, on up to four workers. The slow tier runs in one
# process: it shares engine starts that workers would each repeat.
UNIT := -m "not slow" -n auto --maxprocesses 4

unit: $(STAMP)
	$(VENV)/bin/python -m pytest $(UNIT)

# Dockerfile lint, `docker compose config`, Kubernetes schema validation.
deploy-check: $(STAMP)
	$(VENV)/bin/python -m pytest tests/test_deploy_compose.py tests/test_deploy_docker.py tests/test_deploy_k8s.py

# Everything: the fast tier as `make unit` runs it, then the slow tier.
test: lint
	$(VENV)/bin/python -m pytest $(UNIT)
	$(VENV)/bin/python -m pytest -m slow
