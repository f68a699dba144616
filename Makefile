# Caretext: `make demo` (no services) and `make test` (PostgreSQL + Redis on localhost).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PG_HOST ?= 127.0.0.1
PG_PORT ?= 5432

# Test settings: the suite connects as the application role, migrates as the owner.
TEST_ENV := CARETEXT_TESTING=1 \
	DATABASE_URL=postgres://caretext_app@$(PG_HOST):$(PG_PORT)/caretext \
	DATABASE_OWNER_URL=postgres://caretext_owner@$(PG_HOST):$(PG_PORT)/caretext \
	REDIS_URL=redis://127.0.0.1:6379/15

.PHONY: demo test test-fast install lock lint pg-setup clean screenshots bench

# requirements.lock: what production runs (the Docker image); requirements-dev.lock adds the test tools.
$(VENV)/.installed: requirements.lock requirements-dev.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	touch $@

install: $(VENV)/.installed

demo: install
	CARETEXT_DEMO=1 $(PY) manage.py migrate --noinput
	CARETEXT_DEMO=1 $(PY) manage.py seed_demo
	@echo ""
	@echo "Caretext demo: open http://127.0.0.1:8000/ and sign in with a user above."
	CARETEXT_DEMO=1 $(PY) manage.py runserver 127.0.0.1:8000

pg-setup: install
	$(PY) scripts/pg_setup.py

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test: install pg-setup twilio-contract-tools
	$(TEST_ENV) $(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc; }

test-fast: install pg-setup
	$(TEST_ENV) $(PY) -m pytest -x -m "not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

# Regenerate the lock file after changing pyproject.toml dependencies.
lock: install
	$(PY) -m pip install --quiet pip-tools
	$(VENV)/bin/pip-compile --quiet --no-header --strip-extras --no-emit-index-url \
		--no-emit-find-links -o requirements.lock pyproject.toml
	$(VENV)/bin/pip-compile --quiet --no-header --strip-extras --extra dev --no-emit-index-url \
		--no-emit-find-links -o requirements-dev.lock pyproject.toml

clean:
	rm -rf $(VENV) db.sqlite3 staticfiles

# npm tooling for tests/integrations/test_twilio_contract.py: Twilio's published OpenAPI spec
# (inside @twilio/cli-core) and the Prism mock that serves it on loopback, pinned by the lock file.
TWILIO_CONTRACT := tools/twilio-contract
.PHONY: twilio-contract-tools
$(TWILIO_CONTRACT)/node_modules/.installed: $(TWILIO_CONTRACT)/package.json $(TWILIO_CONTRACT)/package-lock.json
	cd $(TWILIO_CONTRACT) && npm ci --no-audit --no-fund
	touch $@

twilio-contract-tools: $(TWILIO_CONTRACT)/node_modules/.installed

.PHONY: verify restore-drill
# Static and deploy checks, then the reliability, security, PHI and restore suites: one table.
verify: install pg-setup
	$(TEST_ENV) $(PY) scripts/verify.py $(VERIFY_ARGS)

# pg_dump → pg_restore into a fresh database → audit_verify → PHI decrypts with the KEK → a page renders.
restore-drill: install pg-setup
	$(PY) scripts/restore_drill.py $(DRILL_ARGS)

# PNGs of the main pages for the README (throwaway SQLite demo, Debian's Chromium).
screenshots: install
	$(PY) scripts/screenshots.py

# Benchmarks (issue #12): own database caretext_bench, Redis DBs 13/14, gunicorn (2 workers) and a
# Celery worker on loopback; one JSON line per figure. ≤ 15 min; BENCH_ARGS=--quick for ≤ 3 min.
bench: install pg-setup
	$(PY) bench/run.py $(BENCH_ARGS)
