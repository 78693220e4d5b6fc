"""Install record and uninstall: what was there before comes back, sparkfleet's own files go, twice is a no-op."""

import json
import os

import sparkfleet_install_record as rec


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def test_a_changed_file_comes_back_and_a_created_one_goes(tmp_path):
    record_file = str(tmp_path / "state" / "install-record.json")
    existing, created = str(tmp_path / "etc" / "earlyoom"), str(tmp_path / "etc" / "haproxy.d" / "sparkfleet.conf")
    write(existing, "EARLYOOM_ARGS=\"-r 3600\"\n", 0o640)
    record = rec.load(record_file)
    assert rec.record_files(record, record_file, [existing, created]) == [existing, created]
    rec.save(record_file, record)
    assert oct(os.stat(record_file).st_mode & 0o777) == "0o600"
    # The install changes both; a second record (second converge) keeps the first originals.
    write(existing, "EARLYOOM_ARGS=\"--avoid vllm\"\n", 0o644)
    write(created, "[Service]\n")
    record = rec.load(record_file)
    assert rec.record_files(record, record_file, [existing, created]) == []

    actions, consumed = rec.restore_files(record, [existing, created], check_mode=True)
    assert len(actions) == 2 and read(existing).endswith("--avoid vllm\"\n"), "check mode changed a file"
    actions, consumed = rec.restore_files(record, [existing, created])
    assert actions == ["restored %s to its original" % existing, "removed %s (sparkfleet created it)" % created]
    assert read(existing) == "EARLYOOM_ARGS=\"-r 3600\"\n" and oct(os.stat(existing).st_mode & 0o777) == "0o640"
    assert not os.path.exists(created) and consumed == [existing, created]
    assert rec.restore_files(record, [existing, created])[0] == []


def test_daemon_json_gets_its_own_keys_back_and_keeps_later_ones(tmp_path):
    daemon = str(tmp_path / "daemon.json")
    write(daemon, json.dumps({"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}},
                              "default-ulimits": {"nofile": {"Name": "nofile", "Soft": 1024, "Hard": 1024}}}))
    record = rec.load(str(tmp_path / "r.json"))
    assert rec.record_json_keys(record, daemon, ["default-ulimits", "log-driver"]) == ["default-ulimits", "log-driver"]
    # sparkfleet merges; the operator adds a key of their own afterwards.
    write(daemon, json.dumps({"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}},
                              "default-ulimits": {"memlock": {"Name": "memlock", "Soft": -1, "Hard": -1}},
                              "log-driver": "local", "data-root": "/srv/docker"}))
    assert rec.restore_json_keys(record, daemon) == ["restored keys default-ulimits, log-driver of %s" % daemon]
    assert json.loads(read(daemon)) == {"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}},
                                        "default-ulimits": {"nofile": {"Name": "nofile", "Soft": 1024, "Hard": 1024}},
                                        "data-root": "/srv/docker"}
    assert rec.restore_json_keys(record, daemon) == []


def test_daemon_json_left_alone_otherwise_comes_back_byte_for_byte(tmp_path):
    # A Spark's daemon.json as NVIDIA's tools write it: its own key order and layout.
    daemon = str(tmp_path / "daemon.json")
    original = '{\n    "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}},\n' \
               '    "default-runtime": "nvidia"\n}\n'
    write(daemon, original)
    record = rec.load(str(tmp_path / "r.json"))
    rec.record_json_keys(record, daemon, ["default-ulimits"])
    # The install rewrites it with sorted keys (to_nice_json) and its own key.
    merged = dict(json.loads(original), **{"default-ulimits": {"memlock": {"Hard": -1}}})
    write(daemon, json.dumps(merged, indent=2, sort_keys=True) + "\n")
    assert rec.restore_json_keys(record, daemon)
    assert read(daemon) == original
    assert rec.restore_json_keys(record, daemon) == []


def test_a_daemon_json_sparkfleet_created_is_removed(tmp_path):
    daemon = str(tmp_path / "daemon.json")
    record = rec.load(str(tmp_path / "r.json"))
    rec.record_json_keys(record, daemon, ["default-ulimits"])
    write(daemon, json.dumps({"default-ulimits": {}}))
    assert rec.restore_json_keys(record, daemon)
    assert not os.path.exists(daemon)


def test_kernel_settings_go_back_where_writable_and_are_a_note_where_not(tmp_path):
    proc = tmp_path / "proc"
    write(str(proc / "vm" / "swappiness"), "60\n")
    record = rec.load(str(tmp_path / "r.json"))
    assert rec.record_sysctl(record, str(proc), ["vm.swappiness", "vm.gone"]) == ["vm.swappiness", "vm.gone"]
    write(str(proc / "vm" / "swappiness"), "10\n")
    actions, notes = rec.restore_sysctl(record, str(proc), apply=False)
    assert actions == [] and notes == ["left vm.swappiness=10 (original 60): %s is not writable here" % proc]
    actions, notes = rec.restore_sysctl(record, str(proc), apply=True)
    assert actions == ["set vm.swappiness back to 60 (was 10)"] and read(str(proc / "vm" / "swappiness")) == "60"


def test_only_packages_that_were_missing_are_sparkfleets(tmp_path):
    record = rec.load(str(tmp_path / "r.json"))
    assert rec.record_packages(record, {"earlyoom": False, "haproxy": True}) == ["earlyoom", "haproxy"]
    assert rec.record_packages(record, {"earlyoom": True}) == []
    assert record["packages"] == {"earlyoom": {"installed_before": False}, "haproxy": {"installed_before": True}}


def test_removal_spares_the_weights_and_the_directories_above_them(tmp_path):
    state = tmp_path / "var" / "lib" / "sparkfleet"
    weights = state / "models" / "DeepSeek-V4-Flash"
    write(str(weights / "model-00001.safetensors"), "w")
    write(str(state / "compile-cache" / "abc" / "x.so"), "c")
    write(str(state / "last-known-good" / "record.json"), "{}")
    write(str(tmp_path / "etc" / "sysctl.d" / "60-sparkfleet.conf"), "vm.swappiness = 10\n")
    write(str(tmp_path / "etc" / "sysctl.d" / "10-operator.conf"), "kernel.x = 1\n")
    patterns = [str(state), str(tmp_path / "etc" / "sysctl.d" / "60-sparkfleet*")]
    planned = rec.remove_paths(patterns, keep=[str(weights)], check_mode=True)
    assert os.path.exists(str(state / "compile-cache")), "check mode removed something"
    done = rec.remove_paths(patterns, keep=[str(weights)])
    assert done == planned and len(done) == 3
    assert sorted(os.listdir(str(state))) == ["models"] and os.listdir(str(weights)) == ["model-00001.safetensors"]
    assert os.listdir(str(tmp_path / "etc" / "sysctl.d")) == ["10-operator.conf"]
    assert rec.remove_paths(patterns, keep=[str(weights)]) == []


def test_directories_sparkfleet_created_go_when_empty_and_existing_ones_stay(tmp_path):
    (tmp_path / "usr" / "local").mkdir(parents=True)
    record = rec.load(str(tmp_path / "r.json"))
    libexec = str(tmp_path / "usr" / "local" / "libexec" / "sparkfleet")
    assert rec.record_dirs(record, [libexec]) == [libexec, os.path.dirname(libexec)]
    assert rec.record_dirs(record, [libexec]) == []
    os.makedirs(libexec)
    write(os.path.join(libexec, "tool"), "x")
    assert rec.remove_created_dirs(record) == []  # not empty yet
    os.remove(os.path.join(libexec, "tool"))
    assert rec.remove_created_dirs(record) == [
        "removed empty directory %s (sparkfleet created it)" % libexec,
        "removed empty directory %s (sparkfleet created it)" % os.path.dirname(libexec)]
    assert os.path.isdir(str(tmp_path / "usr" / "local"))


def test_units_go_back_to_their_enabled_and_running_state(tmp_path):
    record = rec.load(str(tmp_path / "r.json"))
    assert rec.record_units(record, {"haproxy.service": {"enabled": False, "active": False},
                                     "docker.service": {"enabled": True, "active": True}}) == ["docker.service",
                                                                                              "haproxy.service"]
    assert rec.record_units(record, {"haproxy.service": {"enabled": True, "active": True}}) == []
    now = {"enabled": True, "active": True}
    assert rec.unit_plan(record, "haproxy.service", now, files_changed=True) == ["disable", "stop"]
    assert rec.unit_plan(record, "docker.service", now, files_changed=True) == ["restart"]
    assert rec.unit_plan(record, "docker.service", now, files_changed=False) == []
    assert rec.unit_plan(record, "docker.service", {"enabled": False, "active": False}, False) == ["enable", "restart"]
    assert rec.unit_plan(record, "unknown.service", now, True) == []
