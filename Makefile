# The two set-up commands of the README: `make serve` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
JS_SDK := tests/js/node_modules/.installed

.PHONY: serve test bench demo-model

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

test: $(STAMP) $(JS_SDK)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python bench/overhead.py

# Train the shapes demo model from scratch (hours on 2 CPU cores; set DEVICE=cuda for minutes).
DEVICE ?= cpu
demo-model: $(STAMP)
	$(VENV)/bin/kiln demo train --out build/shapes --device $(DEVICE)
	$(VENV)/bin/kiln demo train-inpaint --base build/shapes --out build/shapes-inpaint --device $(DEVICE)
	$(VENV)/bin/python bench/adherence.py --model build/shapes --update-card
