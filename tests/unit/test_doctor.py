"""The doctor: failure signatures with their fix, secret redaction, the summary."""

import pytest

import sparkfleet_doctor as doctor

# One real-looking line per signature (from the seeds' logs and the releases' messages).
LINES = {
    "nccl-memlock": "spark-a1:123:456 [0] misc/ibvwrap.cc:196 NCCL WARN Call to ibv_reg_mr failed with error "
                    "Cannot allocate memory",
    "master-port-held": "torch.distributed.DistNetworkError: The server socket has failed to listen on any local "
                        "network address. port: 29501, useIpv6: false, code: -98, name: EADDRINUSE, message: "
                        "address already in use",
    "page-cache": "ValueError: Free memory on device cuda:0 (101.2/119.7 GiB) on startup is less than desired GPU "
                  "memory utilization (0.9, 107.7 GiB).",
    "overlay-twice": "UnboundLocalError: cannot access local variable 'w13_weight' where it is not associated with a value",
    "ghost-execstart": "sparkfleet-vllm-head.service: Main process exited, code=exited, status=127/n/a",
    "start-limit": "sparkfleet-vllm-head.service: Start request repeated too quickly.",
    "rank-died": "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.",
    "gpu-xid": "NVRM: Xid (PCI:000f:01:00): 79, pid=1234, GPU has fallen off the bus.",
    "oom-kill": "2026-12-04T05:12:09+0000 spark-a2 kernel: Out of memory: Killed process 48211 (VLLM::Worker) "
                "total-vm:131204912kB, anon-rss:9912344kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:40212kB "
                "oom_score_adj:0",
}


@pytest.mark.parametrize("key", sorted(LINES))
def test_each_signature_is_named_with_its_fix(key):
    found = doctor.match_signatures({"journal-sparkfleet-vllm-head.txt": "boring line\n" + LINES[key] + "\nafter\n"})
    assert [item["key"] for item in found] == [key]
    assert found[0]["evidence"] == LINES[key] and found[0]["file"] == "journal-sparkfleet-vllm-head.txt"
    assert found[0]["fix"]


def test_the_cleanup_refusal_is_the_held_port_too_and_203_is_a_ghost():
    held = "sparkfleet-cleanup: port 29501 is held by pid 812 (python3 -m http.server 29501), which is not vLLM"
    assert [i["key"] for i in doctor.match_signatures({"j": held})] == ["master-port-held"]
    assert [i["key"] for i in doctor.match_signatures({"j": "Failed at step EXEC ... status=203/EXEC"})] == ["ghost-execstart"]


def test_a_healthy_log_matches_nothing_and_the_last_occurrence_is_the_evidence():
    assert doctor.match_signatures({"j": "INFO Loading weights took 41.2 seconds\nINFO Started server process"}) == []
    found = doctor.match_signatures({"a": "x EADDRINUSE first", "b": "y EADDRINUSE last"})
    assert found[0]["evidence"] == "y EADDRINUSE last"


def test_secrets_are_redacted_by_value_and_by_name():
    key = "Zq7pW2xv9LmN3bT8"
    text = ("VLLM_API_KEY=%s\nHF_TOKEN: hf_abcdef123456\n\"--api-key\", \"%s\"\nvllm serve --api-key %s\n"
            "Authorization: Bearer %s\nsomething else %s\nNCCL_IB_HCA=mlx5_0\n" % (key, key, key, key, key))
    out = doctor.redact(text, [key])
    assert key not in out and "hf_abcdef123456" not in out
    assert "NCCL_IB_HCA=mlx5_0" in out and "VLLM_API_KEY=<redacted>" in out
    # Named secrets go even when their value is not known.
    assert doctor.redact('{"password": "hunter22"}') == '{"password": "<redacted>"}'


def test_kernel_lines_and_summary():
    assert doctor.kernel_lines("a\nNVRM: Xid 79\nb\nGSP timeout\n") == ["NVRM: Xid 79", "GSP timeout"]
    found = doctor.match_signatures({"journal-sparkfleet-vllm-head.txt": LINES["master-port-held"]})
    lines = doctor.summary_lines({"spark-a1": {"signatures": found, "missing": ["nvidia-smi"]},
                                  "spark-a2": {"signatures": [], "missing": []}}, "/tmp/b")
    assert lines[0].startswith("Bundle: /tmp/b")
    assert lines[1].startswith("spark-a1: master-port-held (the rendezvous (master) port is held")
    assert lines[3].startswith("    fix: run /usr/local/libexec/sparkfleet/sparkfleet-cleanup --dry-run")
    assert "spark-a1 lacks (not collected): nvidia-smi" in lines[4]
    assert lines[5] == "spark-a2: no known failure signature"


def test_gid_table_reads_non_zero_gids(tmp_path):
    port = tmp_path / "mlx5_0" / "ports" / "1"
    (port / "gids").mkdir(parents=True)
    (port / "gid_attrs" / "types").mkdir(parents=True)
    (port / "gids" / "0").write_text("fe80:0000:0000:0000:0000:0000:0000:0001\n")
    (port / "gids" / "1").write_text("0000:0000:0000:0000:0000:0000:0000:0000\n")
    (port / "gid_attrs" / "types" / "0").write_text("RoCE v2\n")
    assert doctor.gid_table(str(tmp_path)) == ["mlx5_0 1 0 fe80:0000:0000:0000:0000:0000:0000:0001 RoCE v2"]


WORKER = "sparkfleet-vllm-worker.service"


def journal(*lines):
    return {"journal-%s.txt" % WORKER: "\n".join("2026-12-04T05:%02d:00+0000 spark-a2 %s" % (i, line)
                                                  for i, line in enumerate(lines)) + "\n"}


@pytest.mark.parametrize("exit_line", [
    "Main process exited, code=exited, status=137/n/a",  # docker run passing on its container's SIGKILL
    "Main process exited, code=exited, status=143/n/a",
    "Main process exited, code=killed, status=9/KILL",
])
def test_a_rank_killed_while_serving_is_named(exit_line):
    found = doctor.match_signatures(journal(
        "systemd[1]: Started %s - sparkfleet vLLM worker." % WORKER,
        "sparkfleet-launch[812]: INFO Loading weights took 41.2 seconds",
        "systemd[1]: %s: %s" % (WORKER, exit_line),
        "systemd[1]: %s: Failed with result 'exit-code'." % WORKER,
        "systemd[1]: %s: Scheduled restart job, restart counter is at 1." % WORKER,
        "systemd[1]: Started %s - sparkfleet vLLM worker." % WORKER))
    assert [item["key"] for item in found] == ["rank-killed"]
    assert found[0]["evidence"].endswith(exit_line) and "killed by a signal while serving" in found[0]["meaning"]


def test_a_stop_that_was_asked_for_is_not_a_kill():
    # A rollout or reboot stops the unit; its exit on SIGTERM or after docker stop's bound is expected.
    assert doctor.match_signatures(journal(
        "systemd[1]: Started %s - sparkfleet vLLM worker." % WORKER,
        "systemd[1]: Stopping %s - sparkfleet vLLM worker..." % WORKER,
        "systemd[1]: %s: Main process exited, code=exited, status=143/n/a" % WORKER,
        "systemd[1]: Stopped %s - sparkfleet vLLM worker." % WORKER)) == []
    # ... but a kill after the next start is one.
    found = doctor.match_signatures(journal(
        "systemd[1]: Stopping %s - sparkfleet vLLM worker..." % WORKER,
        "systemd[1]: Stopped %s - sparkfleet vLLM worker." % WORKER,
        "systemd[1]: Started %s - sparkfleet vLLM worker." % WORKER,
        "systemd[1]: %s: Main process exited, code=exited, status=137/n/a" % WORKER))
    assert [item["key"] for item in found] == ["rank-killed"]


def test_an_oom_kill_is_named_before_the_kill_it_explains():
    texts = journal("systemd[1]: %s: Main process exited, code=exited, status=137/n/a" % WORKER)
    texts["kernel.txt"] = "\n".join(doctor.kernel_lines(
        "boring\npython3 invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0\n"
        + LINES["oom-kill"] + "\n"))
    assert "invoked oom-killer" in texts["kernel.txt"] and "boring" not in texts["kernel.txt"]
    assert [item["key"] for item in doctor.match_signatures(texts)] == ["oom-kill", "rank-killed"]
