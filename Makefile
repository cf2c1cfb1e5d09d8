# dlcourse: `make book` builds the site, `make test` runs every test. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PIP    := $(BIN)/python -m pip install --constraint constraints.txt
BOOK   := $(BIN)/jupyter-book build . -W -n --keep-going
# On a busy 2-core machine PyTorch's OpenMP threads spin-wait on each other and small training
# loops get 10-30x slower, so the tests, which may run several processes at once, wait passively.
# The book build and `make bench` do not: they run one notebook kernel at a time, and on a machine
# that is not oversubscribed passive waiting wakes the threads for every parallel region (a
# (9216, 144) @ (144, 32) product: 1.3 ms instead of 0.6; chapter 9: 41 s instead of 28). Both
# measure what a student's notebook gets, PyTorch's defaults.
export OMP_WAIT_POLICY ?= PASSIVE
# (A policy you set yourself, in the environment or on the command line, is kept.)
DEFAULT_THREADS := $(if $(filter file,$(origin OMP_WAIT_POLICY)),env -u OMP_WAIT_POLICY)

.PHONY: help install browser book test bench lab lab-instructor labs strip lock clean distclean \
	release import autograde feedback export report gradebench

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml tools/pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip setuptools wheel
	$(PIP) --editable ".[dev]" --editable ./tools
	$(BIN)/jupyter labextension list 2>&1 | grep -q nbgrader || echo "warning: nbgrader lab extension not found"
	touch $(STAMP)

install: $(STAMP)  ## create .venv with every dependency pinned by constraints.txt

book: $(STAMP)  ## build the HTML site (notebooks executed, cached) into _build/html
	$(BIN)/python -m dlcourse_tools.notebooks cache-guard _build
	$(DEFAULT_THREADS) $(BOOK)
	@echo "The site is at file://$(CURDIR)/_build/html/index.html"

test: $(STAMP)  ## run the whole test suite (unit tests, the strict book build, the site in headless Chromium, the nbgrader round trip)
	$(BIN)/python -m pytest

bench: $(STAMP)  ## dlcourse vs torch speed ratios, time to accuracy, notebook times into _build/bench.json (BENCH_ARGS="--notebooks run --publish": run every notebook, update the Performance page)
	$(DEFAULT_THREADS) $(BIN)/python -m dlcourse_tools.bench $(BENCH_ARGS)

# For a lent GPU machine, where nothing is installed (no .venv, no network): the repository's
# python3 runs it; carried wheels come from .gpu-wheels/ (`make gpuwheels` here). See --help.
GPU_PYTHON := $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)

gpucheck:  ## every CUDA path in under 8 minutes (CUDA unit tests, bench, CNN epoch vs CPU, notebooks) into $OUT or _build/gpu-check (GPUCHECK_ARGS=--dry-run: CPU, tiny sizes)
	$(DEFAULT_THREADS) $(GPU_PYTHON) tools/dlcourse_tools/gpu_check.py $(GPUCHECK_ARGS)

gpuwheels:  ## download the wheels a GPU machine lacks (mlxtend, expecttest, the Jupyter stack; ~18 MiB) into .gpu-wheels/
	$(GPU_PYTHON) tools/dlcourse_tools/gpu_check.py --download-wheels

# Students get a lean environment of their own: the course package and JupyterLab, nothing else
# (no Jupyter Book, pytest or Playwright, and no nbgrader, so no Formgrader or "Create assignment"
# in the menus). Instructors and developers use .venv (`make lab-instructor`).
STUDENT_VENV  := .venv-student
STUDENT_STAMP := $(STUDENT_VENV)/.installed-stamp

$(STUDENT_STAMP): pyproject.toml constraints.txt
	test -d $(STUDENT_VENV) || $(PYTHON) -m venv $(STUDENT_VENV)
	$(STUDENT_VENV)/bin/python -m pip install --constraint constraints.txt --upgrade pip
	$(STUDENT_VENV)/bin/python -m pip install --constraint constraints.txt --editable . jupyterlab
	touch $(STUDENT_STAMP)

lab: $(STUDENT_STAMP)  ## for students: JupyterLab on the repository in a lean .venv-student (dlcourse + JupyterLab only)
	$(STUDENT_VENV)/bin/jupyter lab

lab-instructor: $(STAMP)  ## for instructors: JupyterLab with nbgrader (Formgrader, Create assignment) from .venv
	$(BIN)/jupyter lab

browser:  ## install Chromium for the browser tests (Debian's package, with apt-get) when it is missing
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		echo "chromium: $$(command -v chromium || command -v chromium-browser)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		export DEBIAN_FRONTEND=noninteractive; \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } || { \
		echo "make browser: apt-get could not install chromium (see above); the browser tests (tests/test_site.py) will fail without it"; exit 1; }; \
	else \
		echo "make browser: the browser tests (tests/test_site.py) need Chromium, which is not on PATH and cannot be installed here"; \
		echo "  (apt-get needs root: run 'sudo apt-get install chromium', or put a chromium executable on PATH)"; exit 1; \
	fi

labs: $(STAMP)  ## regenerate the student labs/ from the instructor solutions/ with nbgrader
	@# One lab per folder of solutions/; --force replaces labs/<lab>/ whole. nbgrader records each lab
	@# in gradebook.db (gitignored) and runs `alembic` by name to create it, hence the PATH.
	@set -e; for dir in $(sort $(dir $(wildcard solutions/*/*.ipynb))); do \
		lab=$$(basename $$dir); echo "nbgrader generate_assignment $$lab"; \
		PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m nbgrader generate_assignment "$$lab" --force --log-level=WARN; \
	done

# Instructor workflow (see book/instructor_guide.md), e.g.
#   make release LAB=lab01_perceptron; make import LAB=lab01_perceptron FROM=moodle.zip
#   make autograde LAB=lab01_perceptron W=4; make feedback export report LAB=lab01_perceptron
LAB ?= lab01_perceptron
W   ?= 2
GRADE := PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m dlcourse_tools.grade

release: $(STAMP)  ## generate the student version of LAB into labs/ (and the gradebook)
	$(GRADE) release $(LAB)

import: $(STAMP)  ## import a folder or zip of submissions FROM=... for LAB into submitted/
	@test -n "$(FROM)" || { echo "usage: make import LAB=lab01_perceptron FROM=path/to/download.zip"; exit 2; }
	$(GRADE) import $(LAB) "$(FROM)"

autograde: $(STAMP)  ## autograde LAB with W parallel sandboxed workers (progress bar, ETA)
	$(GRADE) autograde $(LAB) --workers $(W)

feedback: $(STAMP)  ## HTML feedback for LAB (test names, points, messages; no hidden tests)
	$(GRADE) feedback $(LAB)

export: $(STAMP)  ## every grade as CSV into grades.csv
	$(GRADE) export

report: $(STAMP)  ## score distributions and problem submissions of LAB into reports/LAB/
	$(GRADE) report $(LAB)

gradebench: $(STAMP)  ## time autograding N=100 generated lab-1 submissions with W=1 and 2, and plain nbgrader
	$(GRADE) bench --n $(or $(N),100) --workers 1 2

strip: $(STAMP)  ## remove outputs and execution counts from every committed notebook
	$(BIN)/python -m dlcourse_tools.notebooks strip book solutions labs

lock:  ## re-resolve constraints.txt from pyproject.toml in a scratch environment
	rm -rf /tmp/dlcourse-lock && $(PYTHON) -m venv /tmp/dlcourse-lock
	/tmp/dlcourse-lock/bin/pip install "torch==2.13.0" ".[dev]"
	/tmp/dlcourse-lock/bin/pip freeze --exclude-editable | grep -v '^dlcourse' | sort -f > constraints.new
	@echo "Review constraints.new, then move it over constraints.txt (keep the header)."

clean:  ## remove the built site and caches; keeps .venv and the notebooks' execution cache (_build/.jupyter_cache)
	@# Without the cache the next `make book` would re-execute every notebook (minutes).
	test ! -d _build || find _build -mindepth 1 -maxdepth 1 ! -name .jupyter_cache -exec rm -rf {} +
	rm -rf .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean  ## also remove .venv, .venv-student and the execution cache (all of _build)
	rm -rf $(VENV) $(STUDENT_VENV) _build
