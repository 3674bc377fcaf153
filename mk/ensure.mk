# ensure-NAME for every NAME of scripts/ensure-tools.sh's table (gfortran,
# g++, cmake, chromium, venv, broker, ...): makes sure the tool is there,
# installing it as root, else stopping with one message naming the command to
# run. A rule whose recipe runs a tool of the table has its ensure-NAME as an
# order-only prerequisite (after |), so that it is ensured first, also under
# make -j, without making the target out of date; tests/tooling checks this.
# Included by mk/capi.mk (and so by every makefile here).

ENSURE_NAMES := $(shell scripts/ensure-tools.sh --names)
ENSURE_STEPS := $(addprefix ensure-,$(ENSURE_NAMES))

.PHONY: $(ENSURE_STEPS)
$(ENSURE_STEPS): ensure-%:
	@scripts/ensure-tools.sh $*
