.PHONY: deploy test test-fleet lab-up lab-down lint unit molecule-changed

deploy:    ## converge the fleet (the local lab when no real Sparks are configured)
	scripts/deploy

test:      ## the whole test suite, as CI runs it
	scripts/test

test-fleet:  ## the lab at 4 pairs: build once per fleet, batched rollouts, figures against 2 pairs
	scripts/test-fleet

lab-up:
	lab/sparkfleet-lab up

lab-down:
	lab/sparkfleet-lab down

unit:
	scripts/bootstrap && .venv/bin/python -m pytest tests/unit

lint:
	scripts/bootstrap && .venv/bin/yamllint --strict . && .venv/bin/ansible-lint

molecule-changed:  ## molecule scenarios covering what changed against main (BASE=...)
	scripts/bootstrap && PATH=$(CURDIR)/.venv/bin:$$PATH .venv/bin/python scripts/molecule-changed --base $(or $(BASE),main)
