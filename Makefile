# Two commands on a fresh machine: `make demo` (the default pipeline) and `make test`.
# Both create .venv/ and install everything on first use, or when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.medauc-installed
# Keep freed memory in the process between training steps: on small CPUs glibc otherwise
# spends most of a step mapping and unmapping memory (measured: 48 s of 70 s).
export GLIBC_TUNABLES := glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296:glibc.malloc.top_pad=268435456
# Nothing is ever fetched from a model hub at run time.
export HF_HUB_OFFLINE := 1

.PHONY: demo test setup clean-venv benchmarks

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh "$(PYTHON)" "$(VENV)"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medauc run $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile -q $(ARGS)

benchmarks: $(STAMP)
	for b in benchmarks/*.py; do $(VENV)/bin/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
