"""Verify the host role's settings on a converged node (issue: memory hygiene)."""

import json

import pytest

testinfra_hosts = ["molecule-spark-a1", "molecule-spark-a2"]
LIBEXEC = "/usr/local/libexec/sparkfleet"
MEMLOCK = 8388608  # the lab's value (this machine's hard limit); real default is unlimited


def role_of(host):
    return "head" if host.backend.get_hostname().endswith("a1") else "worker"


def test_kernel_settings_file(host):
    text = host.file("/etc/sysctl.d/60-sparkfleet.conf").content_string
    settings = dict(line.split("=", 1) for line in text.split() if "=" in line)
    memtotal_kib = int(host.check_output("awk '/MemTotal/ {print $2}' /proc/meminfo"))
    expected = min(max(memtotal_kib * 1024 * 0.025, 1024 ** 3), 5 * 1024 ** 3) // 1024
    assert int(settings["vm.min_free_kbytes"]) == pytest.approx(expected, rel=0.02)
    assert settings["vm.vfs_cache_pressure"] == "200"
    assert settings["vm.dirty_ratio"] == "10"
    assert settings["vm.dirty_background_ratio"] == "5"
    assert settings["vm.swappiness"] == "10"


def test_limits_for_sessions_and_dockerd(host):
    limits = host.file("/etc/security/limits.d/60-sparkfleet.conf").content_string
    assert "root    hard    memlock    %d" % (MEMLOCK // 1024) in limits
    assert "*       hard    stack      65536" in limits
    assert host.check_output("systemctl show docker.service -p LimitMEMLOCK --value") == str(MEMLOCK)
    assert host.check_output("systemctl show docker.service -p LimitSTACK --value") == "67108864"


def test_daemon_json_merged_not_replaced(host):
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config["storage-driver"] == "overlay2"  # the lab image's own key survives
    assert config["default-ulimits"]["memlock"] == {"Name": "memlock", "Soft": MEMLOCK, "Hard": MEMLOCK}


def test_running_container_has_the_limits(host):
    name = "sparkfleet-vllm-%s" % role_of(host)
    pid = host.check_output("docker inspect --format '{{.State.Pid}}' %s" % name)
    limits = {}
    for line in host.file("/proc/%s/limits" % pid).content_string.splitlines()[1:]:
        limit, soft, hard = line[:26].strip(), line[26:47].strip(), line[47:68].strip()
        limits[limit] = (soft, hard)
    assert limits["Max locked memory"] == (str(MEMLOCK), str(MEMLOCK))
    assert limits["Max stack size"] == ("67108864", "67108864")
    assert host.check_output("docker inspect --format '{{.HostConfig.ShmSize}}' %s" % name) == str(1024 ** 3)
    assert host.check_output("docker inspect --format '{{.HostConfig.IpcMode}} {{.HostConfig.NetworkMode}}' %s"
                             % name) == "host host"


def test_cleanup_dry_run_then_real_run(host):
    host.run_expect([0], "touch /dev/shm/psm_verify /dev/shm/sem.mp-verify && : > /tmp/drop_caches")
    out = host.check_output("%s/sparkfleet-cleanup --dry-run --drop-caches-path /tmp/drop_caches" % LIBEXEC)
    assert "would remove 2 stale shared-memory file(s)" in out
    assert host.file("/dev/shm/psm_verify").exists
    out = host.check_output("%s/sparkfleet-cleanup --drop-caches-path /tmp/drop_caches" % LIBEXEC)
    assert "did remove 2 stale shared-memory file(s)" in out
    assert not host.file("/dev/shm/psm_verify").exists
    assert host.file("/tmp/drop_caches").content_string == "3\n"
    assert "nothing to clean" in host.check_output("%s/sparkfleet-cleanup --no-drop-caches" % LIBEXEC)


def test_unit_start_ran_cleanup_and_preflight(host):
    journal = host.check_output("journalctl -u sparkfleet-vllm-%s --no-pager -o cat" % role_of(host))
    assert "sparkfleet-cleanup: did sync and drop the page cache via /var/lib/sparkfleet-lab/drop_caches" in journal
    assert "memory preflight ok on molecule-spark-" in journal
    assert host.file("/var/lib/sparkfleet-lab/drop_caches").content_string == "3\n"


def test_memory_preflight_on_crafted_meminfo(host):
    good = "MemTotal: 125513728 kB\\nMemAvailable: 121634816 kB\\nCached: 1000000 kB\\n"
    low = "MemTotal: 125513728 kB\\nMemAvailable: 11534336 kB\\nCached: 104857600 kB\\n"
    host.run_expect([0], "printf '%s' > /tmp/meminfo.good && printf '%s' > /tmp/meminfo.low" % (good, low))
    ok = host.run("%s/sparkfleet-preflight --utilization 0.88 --meminfo /tmp/meminfo.good --node n1" % LIBEXEC)
    assert ok.rc == 0 and "memory preflight ok on n1" in ok.stdout
    bad = host.run("%s/sparkfleet-preflight --utilization 0.88 --meminfo /tmp/meminfo.low --node n1" % LIBEXEC)
    assert bad.rc == 1
    assert "memory preflight failed on n1: MemAvailable 11.0 GiB < needed 107.3 GiB" in bad.stderr
    assert "drop the page cache (100.0 GiB cached)" in bad.stderr


def test_compile_cache_is_keyed_by_image_id(host):
    image = host.check_output("docker inspect --format '{{.Image}}' sparkfleet-vllm-%s" % role_of(host))
    key = image.split(":", 1)[1][:16]
    assert host.file("/var/lib/sparkfleet/compile-cache/%s" % key).is_directory
    mounts = host.check_output("docker inspect --format '{{json .Mounts}}' sparkfleet-vllm-%s" % role_of(host))
    assert "/var/lib/sparkfleet/compile-cache/%s" % key in mounts


def _earlyoom_victim(host, extra):
    """The process earlyoom would pick now (thresholds forced, --dryrun: nothing is killed)."""
    out = host.run("timeout 3 earlyoom -m 99,99 -s 99,99 --dryrun -r 0 %s 2>&1" % extra).stdout
    for line in out.splitlines():
        if line.startswith("sending SIG") and '"' in line:
            return line.split('"')[1]
    raise AssertionError("earlyoom picked nothing:\n" + out)


def test_earlyoom_picks_other_processes_before_the_serving_ones(host):
    import shlex
    assert host.service("earlyoom").is_enabled and host.service("earlyoom").is_running
    config = host.file("/etc/default/earlyoom").content_string
    args = shlex.split(config.split('EARLYOOM_ARGS="', 1)[1].rsplit('"', 1)[0])
    assert args[args.index("-M") + 1] == "4194304,2097152"
    avoid = args[args.index("--avoid") + 1]
    # The simulator, like vLLM's console script, runs under the name `vllm`.
    serving = host.check_output("cat /proc/$(docker inspect --format '{{.State.Pid}}' sparkfleet-vllm-%s)/comm"
                                % role_of(host))
    assert serving == "vllm"
    # Decoys: one named like vLLM's engine and the likelier victim by its score (oom_score_adj
    # 300), and an ordinary process (100). earlyoom 1.7 (Debian 12, Ubuntu 24.04) takes 300 off
    # the badness of an --avoid match: enough to put it behind the other one.
    host.run_expect([0], "cp /bin/sleep /tmp/VLLM::EngineCore && cp /bin/sleep /tmp/hog")
    host.run_expect([0], "(/tmp/VLLM::EngineCore 30 & echo 300 > /proc/$!/oom_score_adj; "
                         "/tmp/hog 30 & echo 100 > /proc/$!/oom_score_adj) >/dev/null 2>&1")
    try:
        assert _earlyoom_victim(host, "") == "VLLM::EngineCor"  # without the guard it would go first
        assert _earlyoom_victim(host, "--avoid %s" % shlex.quote(avoid)) == "hog"
    finally:
        host.run("pkill -f '^/tmp/(VLLM::EngineCore|hog) 30'")
