# rnnkit: `make all` trains, evaluates and exports every app; `make test` runs the suite.
# Every target depends on `setup`, so a fresh machine needs no other step.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RNNKIT := $(VENV)/bin/rnnkit
STAMP := $(VENV)/.rnnkit-installed
APT_PACKAGES := espeak-ng festival festvox-czech-dita festvox-italp16k festvox-suopuhe-lj festvox-ca-ona-hts festvox-us-slt-hts festvox-czech-machac festvox-itapc16k festvox-suopuhe-mv festvox-kallpc16k festvox-kdlpc16k
QUICK ?=
QUICK_FLAG := $(if $(QUICK),--quick,)
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup system-deps test bench memory-horizon lesson all clean \
	sentiment sentiment-prepare sentiment-train sentiment-evaluate sentiment-export sentiment-predict \
	voice-gender voice-gender-prepare voice-gender-train voice-gender-evaluate voice-gender-export voice-gender-predict \
	translation translation-prepare translation-train translation-evaluate translation-export translation-predict \
	captioning captioning-prepare captioning-train captioning-evaluate captioning-export captioning-predict \
	serve

APPS := sentiment voice-gender translation captioning

help: ## List every target with one line each
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-24s %s\n", $$1, $$2}'
	@for a in $(APPS); do \
		printf "  %-24s %s\n" "$$a" "$$a: prepare, train, evaluate and export end to end" \
			"$$a-prepare" "$$a: fetch the default data and build the dataset" \
			"$$a-train" "$$a: train (resumes after an interruption)" \
			"$$a-evaluate" "$$a: evaluate on held-out data, write metrics.json and PNGs" \
			"$$a-export" "$$a: export a new SavedModel version to saved_models/"; \
	done

setup: $(STAMP) system-deps ## Create .venv and install rnnkit with its dev extras (idempotent)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	@touch $@

system-deps: ## Install the Debian tools the apps and tests use (espeak-ng; festival + 10 voices; npm), if missing
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

test: setup ## Run the whole test suite
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup ## Run the benchmarks (layer speed, serving load) and print their figures
	$(PY) benchmarks/layer_speed.py
	@if [ -f benchmarks/serve_load.py ]; then $(PY) benchmarks/serve_load.py; fi

memory-horizon: setup ## How far back each Elman variant remembers (adding + copy tasks; QUICK=1: minutes)
	$(PY) benchmarks/memory_horizon.py $(QUICK_FLAG)

lesson: memory-horizon ## Every figure of docs/lesson.md (memory horizon, no-clip run, the unfolded network)
	$(PY) benchmarks/memory_horizon.py --clip-norm 0 --configs relu,irnn --tasks adding \
		--lengths 100,200 --no-sweep --no-skip --output runs/memory_horizon_noclip $(QUICK_FLAG)
	$(PY) benchmarks/unfolded_network.py $(if $(wildcard runs/sentiment/model.keras),--model runs/sentiment/model.keras,)

all: setup sentiment voice-gender translation captioning ## Fetch data, train, evaluate and export all four apps (QUICK=1: small budgets)

# One block of targets per app: <app> runs prepare, train, evaluate and export end to end.
define APP_TARGETS
$(1): setup
	$(RNNKIT) $(2) prepare $(QUICK_FLAG)
	$(RNNKIT) $(2) train $(QUICK_FLAG)
	$(RNNKIT) $(2) evaluate $(QUICK_FLAG)
	$(RNNKIT) $(2) export $(QUICK_FLAG)
$(1)-prepare: setup
	$(RNNKIT) $(2) prepare $(QUICK_FLAG)
$(1)-train: setup
	$(RNNKIT) $(2) train $(QUICK_FLAG)
$(1)-evaluate: setup
	$(RNNKIT) $(2) evaluate $(QUICK_FLAG)
$(1)-export: setup
	$(RNNKIT) $(2) export $(QUICK_FLAG)
endef
$(eval $(call APP_TARGETS,sentiment,sentiment))
$(eval $(call APP_TARGETS,voice-gender,voice_gender))
$(eval $(call APP_TARGETS,translation,translation))
$(eval $(call APP_TARGETS,captioning,captioning))

sentiment-predict: setup ## Classify TEXT="..." with the latest sentiment export
	$(RNNKIT) sentiment predict "$(TEXT)"
voice-gender-predict: setup ## Classify the audio FILE=... with the latest voice_gender export
	$(RNNKIT) voice_gender predict $(FILE)
translation-predict: setup ## Translate TEXT="..." (Spanish) with the latest translation export
	$(RNNKIT) translation predict "$(TEXT)"
captioning-predict: setup ## Caption IMAGE=... with the latest captioning export
	$(RNNKIT) captioning predict $(IMAGE)

serve: setup ## Serve saved_models/ like TF Serving (REST 8501, gRPC 8500)
	$(RNNKIT) serve --port 8500 --rest_api_port 8501 --model_config_file deploy/models.local.config \
		--monitoring_config_file deploy/monitoring.config

clean: ## Remove generated runs, reports and exports (keeps the data cache)
	rm -rf runs reports saved_models/*/
