"""Host fingerprint used by the uninstall round trip: it sees new, gone and changed files, units and packages."""

import importlib.util
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_spec = importlib.util.spec_from_file_location("snap", os.path.join(ROOT, "plugins", "modules",
                                                                    "sparkfleet_host_snapshot.py"))
snap = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(snap)


def test_walk_sees_content_mode_links_and_skips_excluded(tmp_path):
    (tmp_path / "etc" / "docker").mkdir(parents=True)
    (tmp_path / "etc" / "docker" / "daemon.json").write_text("{}\n")
    (tmp_path / "etc" / "hostname").write_text("a\n")
    os.symlink("/lib/systemd/system/x.service", str(tmp_path / "etc" / "x.service"))
    before = snap.walk([str(tmp_path / "etc")], ["*/hostname"])
    assert sorted(os.path.relpath(p, str(tmp_path)) for p in before) == ["etc", "etc/docker", "etc/docker/daemon.json",
                                                                          "etc/x.service"]
    (tmp_path / "etc" / "docker" / "daemon.json").write_text('{"a": 1}\n')
    os.chmod(str(tmp_path / "etc" / "docker"), 0o700)
    (tmp_path / "etc" / "new.conf").write_text("x")
    os.remove(str(tmp_path / "etc" / "x.service"))
    after = snap.walk([str(tmp_path / "etc")], ["*/hostname"])
    lines = snap.compare({"files": before, "units_enabled": ["a.service"], "packages": ["haproxy"]},
                         {"files": after, "units_enabled": ["a.service", "b.service"], "packages": []})
    text = "\n".join(lines)
    assert "daemon.json changed" in text and "/etc/docker changed: dir 755" in text
    assert "new.conf is new" in text and "x.service is gone (was link -> /lib/systemd/system/x.service)" in text
    assert "enabled unit b.service is new" in text and "package haproxy is gone" in text
    assert snap.compare({"files": after}, {"files": after}) == []
