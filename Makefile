# Two commands on a fresh Linux machine:  make demo  |  make test
# Everything else here is what those two need (and a few conveniences).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-cpu
CORES  ?= 2
DEMO_CONFIG := config/demo.yaml

.PHONY: demo test test-fast browser setup setup-gpu gpu-check lock envs check-config clean-demo dag bench docs-results

setup: $(STAMP)

# CPU environment: exact pins from requirements/lock-cpu.txt, byte-compiled on every core (pip compiles
# one file at a time: about half its install time; a file written for a newer Python, such as torch's
# testing/_internal/py312_intrinsics.py, fails to compile here as it does under pip, so per-file errors
# are listed in $(VENV)/compileall.log and only a compileall that fails without one stops make), then the
# package itself, then the torchaudio/torchvision compatibility step (see ssmttm/compat.py for why), then
# one compile of librosa's numba kernels (~20 s) into the cache that parallel stage jobs copy (see
# ssmttm/numba_cache.py).
$(STAMP): requirements/lock-cpu.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet --no-compile -r requirements/lock-cpu.txt
	$(PY) -m compileall -q -j 0 $(VENV)/lib > $(VENV)/compileall.log 2>&1 || { n=$$(grep -c "^\*\*\* Error compiling" $(VENV)/compileall.log) && \
		echo "compileall: $$n file(s) left uncompiled, as pip leaves them (listed in $(VENV)/compileall.log)"; }
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ssmttm.compat --fix-install --check
	$(PY) -m ssmttm warm-numba
	rm -f $(GPU_STAMP)
	touch $@

# GPU environment (users with CUDA): consistent CUDA torch set + mamba-ssm kernels.
GPU_STAMP := $(VENV)/.installed-gpu
setup-gpu: $(GPU_STAMP)

$(GPU_STAMP): requirements/lock-gpu.txt requirements/gpu-kernels.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=24" wheel packaging ninja
	$(PY) -m pip install -r requirements/lock-gpu.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	$(PY) -m pip install --no-build-isolation -r requirements/gpu-kernels.txt
	$(PY) -m ssmttm.compat --fix-install --check
	$(PY) -m ssmttm warm-numba
	touch $(STAMP) $@

# Everything only a CUDA machine can show, in one call (bench/gpu_check.py; its output is saved like
# a bench's): mamba_ssm parity at paper width, bf16 training step and MFU, generation, the refiner.
gpu-check: $(GPU_STAMP)
	mkdir -p bench/results
	$(PY) bench/gpu_check.py > bench/results/.gpu_check.txt.tmp
	mv bench/results/.gpu_check.txt.tmp bench/results/gpu_check.txt
	tail -n 1 bench/results/gpu_check.txt

# The whole pipeline on the offline demo corpus (same DAG and code as config.yaml).
demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" snakemake --cores $(CORES) --configfile $(DEMO_CONFIG) --rerun-incomplete all

# The listening test's real-browser test (tests/test_listen_browser.py) drives Debian's chromium with
# its chromedriver; installed here when missing (root or sudo; a failed install stops make), else it says
# what to install and the test skips. Once both are there, `make test` requires the test to run
# (SSMTTM_REQUIRE_BROWSER=1): a skip would hide a broken browser set-up.
BROWSER_PKGS := chromium chromium-driver
browser:
	@if [ -x /usr/bin/chromedriver ] && [ -x /usr/bin/chromium ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=sudo; \
	else echo "browser: not root and no sudo: install the Debian packages '$(BROWSER_PKGS)' (/usr/bin/chromium, /usr/bin/chromedriver) to run tests/test_listen_browser.py; it is skipped until then"; exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "browser: no apt-get: install chromium and its chromedriver as /usr/bin/chromium and /usr/bin/chromedriver to run tests/test_listen_browser.py; it is skipped until then"; exit 0; fi; \
	$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BROWSER_PKGS)
REQUIRE_BROWSER := if [ -x /usr/bin/chromedriver ] && [ -x /usr/bin/chromium ]; then export SSMTTM_REQUIRE_BROWSER=1; fi;

# The suite runs on CORES pytest-xdist workers, a test file per worker at a time (--dist loadfile: a
# file's module fixtures, such as the demo pipeline's, are built once); tests/conftest.py starts the
# slow demo-pipeline file first.
TEST_ARGS := -q -n $(CORES) --dist loadfile

test: $(STAMP) browser
	$(REQUIRE_BROWSER) $(PY) -m pytest $(TEST_ARGS) tests

# The contributor's loop: every test but the end-to-end demo pipeline (tests/test_pipeline_demo.py,
# marked slow).
test-fast: $(STAMP) browser
	$(REQUIRE_BROWSER) $(PY) -m pytest $(TEST_ARGS) -m "not slow" tests

check-config: $(STAMP)
	$(PY) -m ssmttm check-config config.yaml
	$(PY) -m ssmttm check-config config.yaml $(DEMO_CONFIG)

envs: $(STAMP)
	$(PY) -m ssmttm envs --lock requirements/lock-gpu.txt --out-dir envs

lock: $(STAMP)
	@echo "regenerate requirements/lock-cpu.txt from the current environment"
	$(PY) -m pip freeze --exclude-editable | sed -e 's/^torch==\(.*\)+cpu$$/torch==\1/' > requirements/.lock-body.txt
	@echo "review requirements/.lock-body.txt, then replace the pins in requirements/lock-cpu.txt"

dag: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" snakemake --cores 1 --configfile $(DEMO_CONFIG) -n all

# Each bench's output is saved whole (first line: the machine; last line: its figures; the protocol
# is bench/_protocol.py's) for `make docs-results`. BENCHES="name ..." runs some.
BENCHES ?= dag_scale tokenize_overhead backbone_speed ssm_levers generation_speed refiner_speed
bench: $(STAMP)
	mkdir -p bench/results
	set -e; for b in $(BENCHES); do \
		$(PY) bench/$$b.py > bench/results/.$$b.txt.tmp; mv bench/results/.$$b.txt.tmp bench/results/$$b.txt; \
		tail -n 1 bench/results/$$b.txt; done

# Paste the demo's tables (results/tables/*.md, written by `make demo`) into README.md and
# docs/results.md, and the saved bench outputs (bench/results/*.txt) into docs/performance.md.
docs-results: $(STAMP)
	$(PY) -m ssmttm docs-results

clean-demo:
	rm -rf results .snakemake
