# The two set-up commands of the README: `make serve` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
JS_SDK := tests/js/node_modules/.installed

.PHONY: serve test bench demo-model browser postgres

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# torch first, pinned: the CPU build installs from local disk; an unpinned one pulls CUDA.
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/kiln models init
	$(VENV)/bin/kiln serve

# the official JS SDK, driven by tests/test_runware_sdk_js.py (Node.js and npm are on the machine)
$(JS_SDK): tests/js/package-lock.json
	cd tests/js && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $(JS_SDK)

# Debian's chromium, which tests/browser drive through Playwright by its path (Playwright's own
# browser download needs the internet): installed when missing and running as root; otherwise
# those tests are skipped, saying so.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; \
	  else echo "chromium is missing (apt-get install chromium, as root): the browser tests will be skipped"; fi; }

# Debian's PostgreSQL server, which tests/postgres.py starts in a temporary folder (as the user
# kiln-pg when run as root): installed when missing and running as root; otherwise the tests on
# PostgreSQL are skipped, saying so.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y postgresql || { apt-get update && apt-get install -y postgresql; }; \
	  else echo "PostgreSQL is missing (apt-get install postgresql, as root): the tests on PostgreSQL will be skipped"; fi; }

test: $(STAMP) $(JS_SDK) browser postgres
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python bench/overhead.py

# Train the shapes demo models from scratch and install them where `kiln models init` registers
# them (about 1.5 h on 2 CPU cores; DEVICE=cuda for minutes). STEPS_SCALE 0.75 is the recipe of
# the shipped weights: 3/4 of TrainConfig.full()'s steps, so that the CPU run fits one stretch.
DEVICE ?= cpu
STEPS_SCALE ?= 0.75
TRAINED := src/kiln/models/trained
demo-model: $(STAMP)
	$(VENV)/bin/kiln demo train --out build/shapes --device $(DEVICE) --steps-scale $(STEPS_SCALE)
	$(VENV)/bin/kiln demo train-inpaint --base build/shapes --out build/shapes-inpaint --device $(DEVICE) --steps-scale $(STEPS_SCALE)
	$(VENV)/bin/python bench/adherence.py --model build/shapes --update-card
	$(VENV)/bin/kiln demo grid --model build/shapes --out docs/shapes-grid.png
	rm -rf $(TRAINED)/shapes $(TRAINED)/shapes-inpaint && mkdir -p $(TRAINED)
	cp -r build/shapes build/shapes-inpaint $(TRAINED)/
