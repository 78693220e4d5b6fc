"""sparkfleet_files: several files in one call, each compared, validated and
renamed into place; check mode writes nothing; diffs for all but secrets."""

import os
import stat
import sys

import pytest

from sparkfleet_files import FilesError, ensure_all

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "plugins", "filter"))

from sparkfleet import sparkfleet_file_spec  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sets owners (root), as the module does on a node")


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writes_directories_then_files_and_a_second_call_changes_nothing(tmp_path):
    dirs = [{"path": str(tmp_path / "cache" / "abc"), "mode": "0750"}]
    files = [{"path": str(tmp_path / "cache" / "abc" / "unit"), "content": "[Unit]\n", "mode": "0644"},
             {"path": str(tmp_path / "tool"), "content": "#!/bin/sh\n", "mode": "0755"}]
    changed, diffs = ensure_all(dirs, files, check_mode=False)
    assert changed == [dirs[0]["path"], files[0]["path"], files[1]["path"]]
    assert mode_of(dirs[0]["path"]) == 0o750 and mode_of(files[1]["path"]) == 0o755
    assert (tmp_path / "cache" / "abc" / "unit").read_text() == "[Unit]\n"
    assert diffs[0]["before"] == "" and diffs[0]["after"] == "[Unit]\n"
    assert ensure_all(dirs, files, check_mode=False) == ([], [])
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary file left


def test_check_mode_reports_the_change_and_its_diff_and_writes_nothing(tmp_path):
    unit = tmp_path / "x.service"
    unit.write_text("RestartSec=1\n")
    os.chmod(unit, 0o644)
    changed, diffs = ensure_all([{"path": str(tmp_path / "new")}],
                                [{"path": str(unit), "content": "RestartSec=15\n"}], check_mode=True)
    assert changed == [str(tmp_path / "new"), str(unit)]
    assert diffs == [{"before_header": str(unit), "after_header": str(unit),
                      "before": "RestartSec=1\n", "after": "RestartSec=15\n"}]
    assert unit.read_text() == "RestartSec=1\n" and not (tmp_path / "new").exists()


def test_a_refused_candidate_is_never_installed_and_the_error_quotes_the_validator(tmp_path):
    target = tmp_path / "launch.json"
    target.write_text("{}\n")
    checker = tmp_path / "check"
    checker.write_text("#!/bin/sh\necho \"$1: --bogus-flag is not an option\" >&2\nexit 3\n")
    os.chmod(checker, 0o755)
    with pytest.raises(FilesError) as error:
        ensure_all([], [{"path": str(target), "content": '{"argv": []}\n', "validate": "%s --check %%s" % checker}],
                   check_mode=False)
    assert "launch.json was not written" in str(error.value)
    assert "exit 3" in str(error.value) and "--bogus-flag is not an option" in str(error.value)
    assert target.read_text() == "{}\n"
    assert sorted(os.listdir(tmp_path)) == ["check", "launch.json"]


def test_an_earlier_file_of_the_same_call_validates_a_later_one(tmp_path):
    checker = tmp_path / "checker"
    files = [{"path": str(checker), "content": "#!/bin/sh\ngrep -q ok \"$1\"\n", "mode": "0755"},
             {"path": str(tmp_path / "good"), "content": "ok\n", "validate": "%s %%s" % checker}]
    changed, _ = ensure_all([], files, check_mode=False)
    assert changed == [str(checker), str(tmp_path / "good")]
    with pytest.raises(FilesError):
        ensure_all([], [{"path": str(tmp_path / "bad"), "content": "no\n", "validate": "%s %%s" % checker}], False)


def test_same_content_with_a_wrong_mode_is_fixed_without_a_diff(tmp_path):
    env = tmp_path / "head.env"
    env.write_text("VLLM_API_KEY=secret\n")
    os.chmod(env, 0o644)
    changed, diffs = ensure_all([], [{"path": str(env), "content": "VLLM_API_KEY=secret\n", "mode": "0600"}], False)
    assert changed == [str(env)] and diffs == [] and mode_of(env) == 0o600


def test_copies_from_a_source_on_the_node_and_keeps_secrets_out_of_diffs(tmp_path):
    live = tmp_path / "head.env"
    live.write_text("VLLM_API_KEY=secret\n")
    lkg = tmp_path / "lkg"
    spec = sparkfleet_file_spec((str(lkg / "head.env"), str(live)), mode="0600", secret=True)
    changed, diffs = ensure_all([{"path": str(lkg), "mode": "0700"}], [spec], check_mode=False)
    assert changed == [str(lkg), str(lkg / "head.env")] and diffs == []
    assert (lkg / "head.env").read_text() == "VLLM_API_KEY=secret\n" and mode_of(lkg / "head.env") == 0o600


def test_file_spec_defaults_the_mode_by_kind():
    assert sparkfleet_file_spec(("/etc/sparkfleet/h.env", "/l/h.env"))["mode"] == "0600"
    assert sparkfleet_file_spec(("/etc/systemd/system/h.service", "/l/h.service"))["mode"] == "0644"


def test_clear_errors_for_what_cannot_work(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(FilesError, match="is a directory"):
        ensure_all([], [{"path": str(tmp_path / "d"), "content": "x"}], False)
    with pytest.raises(FilesError, match="cannot read"):
        ensure_all([], [{"path": str(tmp_path / "f"), "src": str(tmp_path / "missing")}], False)
    with pytest.raises(FilesError, match="no user"):
        ensure_all([], [{"path": str(tmp_path / "f"), "content": "x", "owner": "nosuchuser-sf"}], False)
    with pytest.raises(FilesError, match="must contain %s"):
        ensure_all([], [{"path": str(tmp_path / "f"), "content": "x", "validate": "/bin/true"}], False)
    with pytest.raises(FilesError, match="octal"):
        ensure_all([], [{"path": str(tmp_path / "f"), "content": "x", "mode": "rw"}], False)


def test_removes_listed_files_once_and_check_mode_keeps_them(tmp_path):
    keys = tmp_path / "head.api-keys.yaml"
    keys.write_text("api-key: [a, b]\n")
    assert ensure_all([], [], check_mode=True, absent=[str(keys)])[0] == [str(keys)]
    assert keys.exists()
    changed, diffs = ensure_all([], [], check_mode=False, absent=[str(keys)])
    assert changed == [str(keys)] and "[a, b]" not in str(diffs) and not keys.exists()
    assert ensure_all([], [], check_mode=False, absent=[str(keys)]) == ([], [])
