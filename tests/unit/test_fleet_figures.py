"""scripts/fleet-figures: the rollout window's orchestration per pair, from the plan's batches."""

import importlib.machinery
import importlib.util
import os

PATH = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "fleet-figures")
_loader = importlib.machinery.SourceFileLoader("fleet_figures", PATH)
_spec = importlib.util.spec_from_loader("fleet_figures", _loader)
fleet_figures = importlib.util.module_from_spec(_spec)
_loader.exec_module(fleet_figures)


def _record(plan, **orchestration):
    return {"kind": "rollout", "plan": plan,
            "per_pair": {name: {"orchestration_s": seconds} for name, seconds in orchestration.items()}}


def test_a_batch_adds_its_slowest_pair_to_the_window():
    record = _record("canary: a; batch 1: b, c; batch 2: d", a=8.8, b=14.8, c=14.7, d=7.2)
    assert fleet_figures.window_orchestration_per_pair(record) == round((8.8 + 14.8 + 7.2) / 4, 1)


def test_pairs_rolling_one_at_a_time_give_the_mean():
    assert fleet_figures.window_orchestration_per_pair(_record("canary: a; batch 1: b", a=6.0, b=5.4)) == 5.7


def test_a_plan_that_does_not_name_every_reported_pair_gives_no_figure():
    assert fleet_figures.window_orchestration_per_pair(_record("canary: a", a=6.0, b=5.4)) is None
    assert fleet_figures.window_orchestration_per_pair(_record(None, a=6.0)) is None
