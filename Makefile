# Two commands: `make run` serves the product, `make test` runs the suite.
VENV    ?= .venv
PY      := $(VENV)/bin/python
HOST    ?= 127.0.0.1
PORT    ?= 8000
WORKERS ?= 1
export HOST PORT

# The suite runs against this machine's real PostgreSQL and Redis.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/chat
TEST_REDIS_URL    ?= redis://127.0.0.1:6379/9

.PHONY: run test install lint bench clean worker beat need-redis chromium

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

# A generated SECRET_KEY for this checkout, kept out of git.
.env:
	$(PY) -c "import secrets; print('SECRET_KEY=' + secrets.token_urlsafe(50))" > $@

run: install .env
	$(PY) manage.py migrate --noinput
	$(PY) manage.py serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

# Celery worker and beat (the hourly archival). They need a broker: without
# REDIS_URL tasks run inside the server process (eager) and neither is needed.
worker beat: need-redis install .env
	$(VENV)/bin/celery -A config $@ -l info

need-redis:
	@if [ -z "$$REDIS_URL" ] && ! grep -qs '^REDIS_URL=.' .env; then \
	  echo "make $(MAKECMDGOALS) needs REDIS_URL (Redis is the Celery broker)," \
	    "e.g. make $(MAKECMDGOALS) REDIS_URL=redis://127.0.0.1:6379/0" >&2; \
	  echo "Without REDIS_URL tasks run in process (eager): make run alone is enough." >&2; \
	  exit 1; \
	fi

# The browser tests (tests/clients) drive Debian's Chromium; Playwright never
# downloads a browser. Installed here when missing and running as root.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else \
	    echo "The browser tests need $(CHROMIUM): run 'sudo apt-get install chromium'" \
	      "(they are skipped without it)." >&2; \
	  fi; \
	fi

test: install chromium
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) DEBUG=0 CONN_MAX_AGE=0 \
	SECRET_KEY=test-only-secret-key-not-for-production-use ENV_FILE=/nonexistent CHAT_AUTH_RATE=100000/minute \
	$(PY) -m pytest --cov --cov-report=term $(PYTEST_ARGS)

# The benchmark suite (benchmarks/README.md): ours and the Channels tutorial
# baseline side by side on this machine's PostgreSQL and Redis (db 12). Short
# by default (a few minutes); the issue's sizes with ARGS=--full. Writes
# benchmarks/results/<stamp>.json and .md and redraws docs/figures/latency_vs_load.png.
ARGS ?=
bench: install
	$(PY) -m benchmarks.run --plot $(ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) staticfiles .coverage .coverage.* htmlcov test-artifacts
