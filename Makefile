# Patientkontrakt — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
# Two install stamps per pyproject.toml: what running needs (`make run`), and the test and bench
# extras on top (`make test`, `make lint`, `make bench`). A stale stamp of an older pyproject.toml is
# simply never looked at again.
CKSUM      := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
RUN_STAMP  := $(VENV)/.installed-run-$(CKSUM)
TEST_STAMP := $(VENV)/.installed-test-$(CKSUM)
PK_TEST_DATABASE_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test
export PK_TEST_DATABASE_URL

.PHONY: run test lint bench soak image-check image-tools messages fhir-core postgres pg-client chromium pgbouncer promtool clean

## make run: set up (without the test and bench extras), migrate an SQLite database and load the
## demo region (one process), and serve on http://127.0.0.1:$(PORT) (`make run PORT=8080`) with the
## test sign-in (demo users only). PK_BASE_URL follows the port, so the demo's sign-in clients come
## back to it; the access log keeps the name it had on port 8000 (its checkpoints are signed with it).
## Beside the server runs one notification worker (`patientkontrakt worker`), stopped with it;
## Subscriptions may deliver to 127.0.0.1 (PK_SUBSCRIPTION_ALLOWED_HOSTS), over plain http.
run: export PK_BASE_URL ?= http://127.0.0.1:$(PORT)
run: export PK_AUDIT_ORIGIN ?= 127.0.0.1:8000/audit
run: export PK_SUBSCRIPTION_ALLOWED_HOSTS ?= 127.0.0.1
run: $(RUN_STAMP)
	$(BIN)/python -m compileall -qq -j 0 -x 'site-packages/fhir/resources/' $(VENV)/lib & \
		$(BIN)/patientkontrakt demo --migrate; loaded=$$?; wait; exit $$loaded
	$(BIN)/patientkontrakt worker & worker=$$!; trap 'kill $$worker 2>/dev/null' INT TERM; \
		PK_TEST_IDP=true PK_AUDIT_CHECKPOINT_FILE=audit-checkpoints.txt \
		$(BIN)/patientkontrakt serve --host 127.0.0.1 --port $(PORT); served=$$?; \
		kill $$worker 2>/dev/null; wait $$worker; exit $$served

## make test: set up and run the whole test suite (PostgreSQL at PK_TEST_DATABASE_URL), in
## TEST_WORKERS processes (pytest-xdist; default one per core, `make test TEST_WORKERS=0` for one
## process), each with its own databases; a test file stays in one process (its fixtures are made once).
TEST_WORKERS ?= auto
test: $(TEST_STAMP) postgres pg-client chromium pgbouncer promtool image-tools fhir_profiles/node_modules/.installed tests/browser/node_modules/.installed \
		tests/interop/node/node_modules/.installed
	$(BIN)/ruff check patientkontrakt api tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check patientkontrakt api tests bench
	$(BIN)/mypy

## make bench: load synthetic agreements into PostgreSQL and measure a live server
bench: $(TEST_STAMP) postgres
	$(BIN)/python -m bench $(BENCH_ARGS)

## make soak: the bench's mixed workload (reads, searches, updates, transactions on two server
## processes with the notification worker) for SOAK_DURATION seconds at SOAK_AGREEMENTS, a line
## every 30 s (req/s, p99, errors, server RSS, database connections, outbox depth); fails on any
## error or on memory growth beyond --soak-rss-growth (options after BENCH_ARGS=)
SOAK_DURATION   ?= 600
SOAK_AGREEMENTS ?= 100000
soak: $(TEST_STAMP) postgres
	$(BIN)/python -m bench --soak $(SOAK_DURATION) --agreements $(SOAK_AGREEMENTS) $(BENCH_ARGS)

## make image-check: build deploy/Dockerfile with buildah (no Docker engine needed) and run the image
## against a PostgreSQL database of its own: the entrypoint's refusal without settings, migrate, the
## API with 2 workers on a read-only root, the worker and /readyz, the HEALTHCHECK, the demo, a
## token and a search, the access log's verification (deploy/check-image.sh; root). Where no
## registry can be reached, IMAGE_CHECK_ARGS=--stand-in builds on Debian bookworm's Python instead.
IMAGE_CHECK_ARGS ?=
image-check: postgres pg-client image-tools
	deploy/check-image.sh $(IMAGE_CHECK_ARGS)

# The venv, with a current pip. Quicker than `venv` then `pip install --upgrade pip` (ensurepip
# installs and byte-compiles an older pip and setuptools only for them to be replaced): a venv
# without pip, and the system's pip (22.3 or newer: --python) installs the current one into it;
# where the system has no such pip, the usual way.
$(BIN)/pip:
	$(PYTHON) -m venv --without-pip $(VENV)
	if $(PYTHON) -c 'import pip, sys; sys.exit(tuple(map(int, pip.__version__.split(".")[:2])) < (22, 3))' 2>/dev/null; then \
		$(PYTHON) -m pip --python $(BIN)/python install --quiet --upgrade pip; \
	else \
		$(BIN)/python -m ensurepip --upgrade --default-pip >/dev/null && $(BIN)/pip install --quiet --upgrade pip; \
	fi

# Byte-compiling is most of what pip spends on a fresh install, and most of that goes to the
# models of fhir.resources (R5, STU3 and R4B), of which the service imports a few dozen of R4B's,
# compiled when first imported. So the run install does not compile: `make run` compiles the rest
# on every core while the demo region loads (a no-op once done; what fails to compile is left to
# Python, as pip does).
$(RUN_STAMP): pyproject.toml | $(BIN)/pip
	$(BIN)/pip install --quiet --no-compile -e .
	touch $@

# Everything, in one pip run on a fresh clone (CI); what running needs comes with it.
$(TEST_STAMP): pyproject.toml | $(BIN)/pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@ $(RUN_STAMP)

## make messages: rewrite the Swedish catalogue of the pages from tools/sv_messages.py
messages: $(RUN_STAMP)
	$(BIN)/python -m tools.sv_messages

# The browser tests (tests/browser) drive Debian's Chromium with Playwright for Python, never a
# browser that Playwright downloads (no `playwright install`): install the `chromium` package when
# /usr/bin/chromium is missing (refreshing the package lists first if that fails), and make sure
# the playwright package is in the venv.
CHROMIUM := /usr/bin/chromium
APT_GET  := $(shell [ "$$(id -u)" = 0 ] || echo sudo) env DEBIAN_FRONTEND=noninteractive apt-get
chromium: $(TEST_STAMP)
	@if [ ! -x "$(CHROMIUM)" ]; then \
		echo "installing Debian's chromium for the browser tests"; \
		$(APT_GET) install -y chromium \
		|| { $(APT_GET) update && $(APT_GET) install -y chromium; } \
		|| { echo "could not install Debian's chromium, which tests/browser need" >&2; exit 1; }; \
	fi
	@$(BIN)/python -c "import playwright.sync_api" 2>/dev/null || $(BIN)/pip install --quiet 'playwright>=1.45,<2'

# tests/deploy/test_backup.py backs up and restores with PostgreSQL's pg_dump and pg_restore: install
# Debian's client tools when they are missing (a PostgreSQL server reached over the network).
pg-client:
	@command -v pg_dump >/dev/null 2>&1 && command -v pg_restore >/dev/null 2>&1 || { \
		echo "installing Debian's postgresql-client for tests/deploy"; \
		$(APT_GET) install -y postgresql-client \
		|| { $(APT_GET) update && $(APT_GET) install -y postgresql-client; } \
		|| { echo "could not install postgresql-client (pg_dump, pg_restore), which tests/deploy need" >&2; exit 1; }; }

# tests/storage/test_pgbouncer.py starts its own PgBouncer (Debian's package; only the program is
# used: the package's own service, where systemd starts it, is not needed by the tests).
PGBOUNCER := /usr/sbin/pgbouncer
pgbouncer:
	@if [ ! -x "$(PGBOUNCER)" ]; then \
		echo "installing Debian's pgbouncer for the tests"; \
		$(APT_GET) install -y pgbouncer \
		|| { $(APT_GET) update && $(APT_GET) install -y pgbouncer; } \
		|| { echo "could not install Debian's pgbouncer, which tests/storage/test_pgbouncer.py needs" >&2; exit 1; }; \
	fi

# tests/deploy/test_alerts.py checks deploy/prometheus/alerts.yaml with promtool, from Debian's
# prometheus package: only the program, taken out of the package into the virtualenv (installed,
# the package would also start a Prometheus server where systemd runs). A promtool on PATH is used
# as it is.
PROMTOOL := $(BIN)/promtool
promtool: $(TEST_STAMP)
	@command -v promtool >/dev/null 2>&1 || [ -x "$(PROMTOOL)" ] || { \
		echo "taking promtool out of Debian's prometheus package for tests/deploy/test_alerts.py"; \
		work=$$(mktemp -d) && trap 'rm -rf "$$work"' EXIT && cd "$$work" && \
		{ apt-get download prometheus 2>/dev/null || { $(APT_GET) update && apt-get download prometheus; }; } && \
		dpkg-deb -x prometheus_*.deb root && cp root/usr/bin/promtool "$(CURDIR)/$(PROMTOOL)"; } \
		|| { echo "could not take promtool out of Debian's prometheus package; tests/deploy/test_alerts.py needs it" >&2; exit 1; }

# buildah and debootstrap (Debian's packages) for deploy/check-image.sh (tests/deploy/test_image.py,
# make image-check); only as root, which buildah's chroot isolation needs (the test skips otherwise).
image-tools:
	@if [ "$$(id -u)" = 0 ] && ! { command -v buildah && command -v debootstrap; } >/dev/null; then \
		echo "installing Debian's buildah and debootstrap for deploy/check-image.sh"; \
		$(APT_GET) install -y buildah debootstrap \
		|| { $(APT_GET) update && $(APT_GET) install -y buildah debootstrap; } \
		|| { echo "could not install buildah and debootstrap, which tests/deploy/test_image.py needs" >&2; exit 1; }; \
	fi

# Start the local PostgreSQL cluster if it is installed here but not running.
postgres:
	@if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
		echo "starting local PostgreSQL"; \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; \
	fi

## make fhir-core: re-extract fhir_profiles/core and search from the official R4 package (needs npm)
fhir-core: $(RUN_STAMP)
	rm -rf build/fhir-package && mkdir -p build/fhir-package
	cd build/fhir-package && npm pack --silent hl7.fhir.r4.examples@4.0.1 && tar xzf hl7.fhir.r4.examples-4.0.1.tgz
	$(BIN)/python -m patientkontrakt.fhir.extract_core build/fhir-package/package

## make profiles: compile fhir_profiles/fsh (FSH) with SUSHI, add snapshots, write fhir_profiles/profiles (needs npm)
PROFILES_OUT ?= $(CURDIR)/fhir_profiles/profiles
.PHONY: profiles
profiles: fhir_profiles/node_modules/.installed
	cd fhir_profiles && npm run --silent build -- --out "$(PROFILES_OUT)"

# axe-core for the accessibility checks of the browser tests (injected into the pages).
tests/browser/node_modules/.installed: tests/browser/package.json tests/browser/package-lock.json
	cd tests/browser && npm ci --no-audit --no-fund
	touch $@

# fhir-kit-client, the npm FHIR client the interop tests drive (tests/interop/node/client.mjs).
tests/interop/node/node_modules/.installed: tests/interop/node/package.json tests/interop/node/package-lock.json
	cd tests/interop/node && npm ci --no-audit --no-fund
	touch $@

fhir_profiles/node_modules/.installed: fhir_profiles/package.json fhir_profiles/package-lock.json
	cd fhir_profiles && npm ci --no-audit --no-fund
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
