# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO := data/demo

.PHONY: run test lint bench bench-accuracy notebooks venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==25.3
	$(BIN)/pip install -q -e ".[test,spark]"
	touch $@

## run: the main job on the embedded default: synthetic data -> validation -> features ->
## models evaluated out of time -> MLflow run + registered champion (./mlruns) -> the service
## on http://127.0.0.1:3000 (API key $$RETENTION_API_KEY, default demo-key) and the console
## at http://127.0.0.1:3000/console/ (user demo, password demo-password); Ctrl-C stops it.
## State (MLflow store, campaign log, service config) stays in this folder (RETENTION_HOME).
run: export RETENTION_HOME ?= $(CURDIR)
run: venv
	$(BIN)/retention demo-data --out $(DEMO) --customers 5000 --seed 0
	$(BIN)/retention features build --source $(DEMO)/transactions.yaml \
		--as-of 2023-04-01,2023-07-01,2023-10-01,2024-01-01 --horizon 90d --out $(DEMO)/features
	$(BIN)/retention train --source $(DEMO)/transactions.yaml --horizon 90d --promote
	$(BIN)/retention train uplift --campaign-log $(DEMO)/campaign_log.yaml \
		--features $(DEMO)/features --promote
	printf 'demo-password\n' | $(BIN)/retention console add-user demo \
		--users $(DEMO)/console_users.yaml --password-stdin
	@echo "MLflow UI: $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db"
	@echo "Once the service is ready, try (README, 'Serving'): bash serving/examples.sh"
	@echo "Console: http://127.0.0.1:3000/console/ (user demo, password demo-password)"
	RETENTION_API_KEY=$${RETENTION_API_KEY:-demo-key} $(BIN)/retention serve \
		--features $(DEMO)/features --offers configs/offers/demo.yaml \
		--customers $(DEMO)/customers.yaml --transactions $(DEMO)/transactions.yaml \
		--campaign-history $(DEMO)/campaign_log.yaml --console-users $(DEMO)/console_users.yaml \
		--port 3000

## test: every test (starts a throwaway PostgreSQL and Redis on loopback, installs Debian's
## Chromium for the console's browser tests and Java 17 for the Spark tests when missing),
## then ruff
test: venv
	bash .ci/java.sh
	bash .ci/chromium.sh
	@pg="$${RETENTION_TEST_PG_URL:-$$(bash .ci/postgres.sh)}"; \
	redis="$${RETENTION_TEST_REDIS_URL:-$$(bash .ci/redis.sh)}"; \
	[ -n "$$pg" ] || { echo "make test: no PostgreSQL URL (.ci/postgres.sh failed, see above)" >&2; exit 1; }; \
	[ -n "$$redis" ] || { echo "make test: no Redis URL (.ci/redis.sh failed, see above)" >&2; exit 1; }; \
	echo "PostgreSQL $$pg, Redis $$redis"; \
	RETENTION_TEST_PG_URL="$$pg" RETENTION_TEST_REDIS_URL="$$redis" $(BIN)/python -m pytest -q
	$(BIN)/ruff check .

lint: venv
	$(BIN)/ruff check .

## notebooks: re-execute notebooks/*.ipynb in place, to commit them with their outputs. The
## model report reads the latest run in ./mlruns: the one `make run` left, else one trained
## here on the demo data (no service started); the uplift notebook reads ../shared/datasets
notebooks: export RETENTION_HOME ?= $(CURDIR)
notebooks: venv
	test -f mlruns/mlflow.db || { \
		$(BIN)/retention demo-data --out $(DEMO) --customers 5000 --seed 0 && \
		$(BIN)/retention train --source $(DEMO)/transactions.yaml --horizon 90d; }
	$(BIN)/jupyter-execute --inplace --timeout=900 notebooks/*.ipynb

## bench: speed benchmarks (feature build, BTYD fit), results in bench/RESULTS.md
bench: venv
	$(BIN)/python bench/bench_features.py
	$(BIN)/python bench/bench_btyd.py

## bench-accuracy: out-of-time accuracy on CDNOW and Online Retail II vs every baseline,
## recommender recall@10 on Online Retail II, uplift on Hillstrom
bench-accuracy: venv
	$(BIN)/python bench/bench_accuracy.py
	$(BIN)/python bench/bench_recommender.py
	$(BIN)/python bench/bench_uplift.py

clean:
	rm -rf $(VENV) data mlruns .pytest_cache .ruff_cache
