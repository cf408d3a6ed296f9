# The README's two commands: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.installed-all

.PHONY: demo test install bench pi-check firmware-toolchain test-tools clean

$(STAMP): pyproject.toml constraints.txt Makefile
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "edge-asc needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt -e '.[all]'
	# onnx2tf and tf-keras pin ancient versions of everything: install them without their dependencies.
	$(PIP) install -c constraints.txt --no-deps onnx2tf==1.29.24 tf-keras==2.21.0
	@touch $@

install: $(STAMP)

# ruff first (pinned in the dev extra; rules in pyproject.toml), then the tests. With CI set in the environment (as
# .ci/run sets it) a test whose optional dependency is missing fails instead of being skipped (tests/conftest.py).
test: $(STAMP) firmware-toolchain test-tools
	$(VENV)/bin/ruff check edge_asc tests benchmarks scripts
	$(PY) -m pytest -q --durations=20

# The firmware bench's cross compiler and emulator (the QEMU tests skip without them, and fail under CI): installed
# with apt when missing and running as root, as pi-check installs its tools; otherwise a note, never a failure here.
FIRMWARE_APT := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
firmware-toolchain:
	@if command -v arm-none-eabi-gcc >/dev/null 2>&1 && command -v qemu-system-arm >/dev/null 2>&1 \
	   && [ -n "$$(arm-none-eabi-gcc -print-file-name=libc.a | grep /)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing $(FIRMWARE_APT)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(FIRMWARE_APT)) >/dev/null || echo "note: could not install $(FIRMWARE_APT); QEMU firmware tests skip (fail under CI)"; \
	else echo "note: $(FIRMWARE_APT) missing (install as root); QEMU firmware tests skip (fail under CI)"; fi

# The MQTT broker and the headless browser of the home-integration tests, installed the same way before pytest starts
# (tests/apt_tools.py would otherwise install them from inside the first test that needs them).
TEST_APT := mosquitto chromium
test-tools:
	@if PATH="$$PATH:/usr/sbin:/sbin" command -v mosquitto >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing $(TEST_APT)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(TEST_APT)) >/dev/null || echo "note: could not install $(TEST_APT); the MQTT and browser tests skip (fail under CI)"; \
	else echo "note: $(TEST_APT) missing (install as root); the MQTT and browser tests skip (fail under CI)"; fi

demo: $(STAMP)
	$(VENV)/bin/edge-asc demo

bench: $(STAMP)
	mkdir -p runs/bench
	for b in benchmarks/*.py; do $(PY) $$b --json runs/bench/$$(basename $$b .py).json || exit 1; done

pi-check: $(STAMP)
	bash scripts/pi_check.sh

clean:
	rm -rf $(VENV) runs .pytest_cache
