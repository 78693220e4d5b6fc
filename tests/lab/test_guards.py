"""Each launch guard, triggered against the converged lab: the play (or the
unit) fails with the intended message and the running service is left as it was."""

import concurrent.futures
import json

import pytest

from conftest import FLEET_RELEASE, docker_exec, main_pid, playbook, unit_of, wait_serving

RELEASE = FLEET_RELEASE

# Each guard fails a play before a host is touched: nothing here is timed.
pytestmark = pytest.mark.untimed

GUARDS = [
    ("unknown flag",
     {"sparkfleet_profile_overrides": {"extra_args": ["--bogus-flag"]}},
     "--bogus-flag is not a `vllm serve` option of vLLM %s (pinned fingerprint)" % RELEASE),
    ("misspelt flag, named with the nearest real one",
     {"sparkfleet_profile_overrides": {"extra_args": ["--max-num-seqz", "8"]}},
     "--max-num-seqz is not a `vllm serve` option of vLLM %s (pinned fingerprint); nearest: --max-num-seqs"
     % RELEASE),
    ("flag removed from the pinned release",
     {"sparkfleet_profile_overrides": {"extra_args": ["--swap-space", "4"]}},
     "--swap-space is not a `vllm serve` option of vLLM %s" % RELEASE),
    ("unknown key in a JSON config",
     {"sparkfleet_profile_overrides": {"compilation_config": {"cudagraph_mod": "FULL"}}},
     "--compilation-config has key 'cudagraph_mod', which CompilationConfig does not know (nearest: cudagraph_mode)"),
    ("VLLM_* variable the pinned release does not know",
     {"sparkfleet_profile_overrides": {"env": {"VLLM_SKIP_INIT_MEMORY_CHECK": "1"}}},
     "environment variable VLLM_SKIP_INIT_MEMORY_CHECK is not known to vLLM %s" % RELEASE),
    ("image that carries another vLLM release than the pin",
     {"spark_service_vllm_version": "0.32.9",
      "spark_service_vllm_fingerprint": "{{ role_path }}/../../files/vllm/vllm-%s.fingerprint.json" % RELEASE},
     "carries vLLM '%s', but the fleet pins 0.32.9" % RELEASE),
    ("invalid JSON (quotes lost)",
     {"sparkfleet_profile_overrides": {"extra_args": ["--hf-overrides", "{rope_scaling:yarn}"]}},
     "extra_args --hf-overrides value '{rope_scaling:yarn}' is not valid JSON"),
    ("JSON flag given as a string",
     {"sparkfleet_profile_overrides": {"speculative_config": "{method:deepseek_mtp,num_speculative_tokens:2}"}},
     "speculative_config must be dict"),
    ("forbidden env",
     {"sparkfleet_profile_overrides": {"env": {"VLLM_WORKER_MULTIPROC_METHOD": "fork"}}},
     "VLLM_WORKER_MULTIPROC_METHOD=fork is refused"),
    ("enforce-eager without permission",
     {"sparkfleet_profile_overrides": {"enforce_eager": True}},
     "--enforce-eager disables CUDA graphs"),
    ("headless forced on the head",
     {"sparkfleet_profile_overrides": {"extra_args": ["--headless"]}},
     "extra_args may not set --headless"),
    ("rank mismatch (two heads in a pair)",
     {"sparkfleet_node_role": "head"},
     "pair a has 2 head node(s)"),
    ("profile value out of range",
     {"sparkfleet_profile_overrides": {"gpu_memory_utilization": 0.99}},
     "gpu_memory_utilization is 0.99, above the maximum 0.95"),
    ("ghost ExecStartPre program",
     {"spark_service_pre_start_commands": ["/opt/gone/fix-memory.sh"]},
     "/opt/gone/fix-memory.sh, which does not exist or is not executable"),
]


# Each guard is its own site.yml run that must fail before it touches a host.
# They are independent, so they run 4 at a time: the unit PIDs are read
# before the first and after the last, and every guard must leave them alone.
GUARD_CONCURRENCY = 4


@pytest.fixture(scope="module")
def guard_runs(lab):
    nodes = [node for pair in lab.values() for node in pair.values()]
    before = {n["name"]: main_pid(n) for n in nodes}
    with concurrent.futures.ThreadPoolExecutor(max_workers=GUARD_CONCURRENCY) as pool:
        futures = {g[0]: pool.submit(playbook, "site.yml", "-e", json.dumps(g[1])) for g in GUARDS}
        results = {name: future.result() for name, future in futures.items()}
    after = {n["name"]: main_pid(n) for n in nodes}
    return results, before, after


@pytest.mark.parametrize("name, extra_vars, message", GUARDS, ids=[g[0] for g in GUARDS])
def test_guard_fails_the_play_and_keeps_the_service(guard_runs, name, extra_vars, message):
    results, before, after = guard_runs
    rc, output = results[name]
    assert rc != 0, "%s: the play succeeded" % name
    assert message in output.replace("\n", " ").replace("  ", " ") or message in output, output[-3000:]
    assert before == after and all(after.values()), "a guard's run restarted a running unit: %s -> %s" % (before, after)


def test_unit_refuses_to_start_when_its_launcher_disappears(lab):
    """The 127-all-day failure: a unit whose program is gone fails once, clearly."""
    worker, head = lab["b"]["worker"], lab["b"]["head"]
    container = worker["container"]
    launcher = "/usr/local/libexec/sparkfleet/sparkfleet-launch"
    docker_exec(container, "mv", launcher, launcher + ".moved")
    try:
        result = docker_exec(container, "systemctl", "restart", unit_of(worker), check=False)
        assert result.returncode != 0
        journal = docker_exec(container, "journalctl", "-u", unit_of(worker), "-n", "30", "--no-pager").stdout
        assert "AssertFileIsExecutable=%s" % launcher in journal or "Assertion failed" in journal, journal
    finally:
        docker_exec(container, "mv", launcher + ".moved", launcher)
        docker_exec(container, "systemctl", "reset-failed", unit_of(worker), check=False)
        docker_exec(container, "systemctl", "start", unit_of(worker))
    wait_serving(head["ansible_host"], deadline_s=300)
