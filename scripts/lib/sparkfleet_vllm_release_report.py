# -*- coding: utf-8 -*-
"""What moving the fleet from one pinned vLLM release to another changes.

``compare`` reads two fingerprints (files/vllm/, each derived from its wheel)
and lists, section by section, what an operator must know before rolling:
`vllm serve` options added, removed or renamed and changed choices, deprecated
values, JSON config keys, ``VLLM_*`` variables, the metrics, log lines and
/health behaviour sparkfleet reads (with the feature that loses what when one
is gone), every shipped profile's argv and env checked the way preflight
checks them (with the nearest option for anything refused) and every overlay
entry against the new release's file. ``render`` writes it as markdown; the
verdict is clean only when the fleet's configuration is valid on the release.

A build tool (scripts/vllm-release), not shipped to hosts.
"""

from __future__ import annotations

import difflib

import sparkfleet_overlay as overlay
import sparkfleet_vllm_args as vllm_args
import sparkfleet_vllm_check as vllm_check
import sparkfleet_vllm_profile as vllm_profile

NODES = (
    {"pair": "a", "role": "head", "rank": 0, "nnodes": 2, "master_addr": "192.0.2.1"},
    {"pair": "a", "role": "worker", "rank": 1, "nnodes": 2, "master_addr": "192.0.2.1"},
)


def _by_dest(fingerprint):
    return {o["dest"]: o for o in fingerprint["serve"]["options"]}


def _flags(option):
    return sorted(set(option["flags"]) | set(option.get("hidden_flags") or []) | set(option.get("negations") or []))


def options_delta(old, new):
    """{added, removed, renamed, choices} between two releases' serve options."""
    before, after = _by_dest(old), _by_dest(new)
    out = {"added": [], "removed": [], "renamed": [], "choices": []}
    gone_flags = {}
    for dest in sorted(set(before) - set(after)):
        for flag in before[dest]["flags"]:
            gone_flags[flag] = dest
    for dest in sorted(set(after) - set(before)):
        out["added"].append(" / ".join(_flags(after[dest])))
    for dest in sorted(set(before) & set(after)):
        old_flags, new_flags = _flags(before[dest]), _flags(after[dest])
        if old_flags != new_flags:
            dropped = sorted(set(old_flags) - set(new_flags))
            added = sorted(set(new_flags) - set(old_flags))
            if dropped:
                out["renamed"].append("%s -> %s" % (", ".join(dropped), ", ".join(added) or "(spelling dropped)"))
            elif added:
                out["added"].append("%s (new spelling of %s)" % (", ".join(added), before[dest]["flags"][0]))
        old_choices, new_choices = before[dest]["choices"], after[dest]["choices"]
        if old_choices != new_choices and old_choices is not None and new_choices is not None:
            lost = [c for c in old_choices if c not in new_choices]
            gained = [c for c in new_choices if c not in old_choices]
            out["choices"].append("%s: %s%s" % (
                after[dest]["flags"][0], ("added %s" % ", ".join(map(str, gained))) if gained else "",
                ("%sremoved %s" % ("; " if gained else "", ", ".join(map(str, lost)))) if lost else ""))
    for flag, dest in sorted(gone_flags.items()):
        near = difflib.get_close_matches(flag, sorted(f for o in after.values() for f in o["flags"]), n=1,
                                         cutoff=0.75)
        out["removed"].append("%s%s" % (flag, " (nearest now: %s)" % near[0] if near else ""))
    return out


def keyed_delta(old, new):
    return {"added": sorted(set(new) - set(old)), "removed": sorted(set(old) - set(new))}


def json_config_delta(old, new):
    out = {}
    for name in sorted(set(old["json_configs"]) | set(new["json_configs"])):
        before = old["json_configs"].get(name, {"keys": [], "choices": {}})
        after = new["json_configs"].get(name, {"keys": [], "choices": {}})
        delta = keyed_delta(before["keys"], after["keys"])
        choices = {}
        for field in sorted(set(before.get("choices", {})) | set(after.get("choices", {}))):
            changed = keyed_delta(before.get("choices", {}).get(field, []), after.get("choices", {}).get(field, []))
            if changed["added"] or changed["removed"]:
                choices[field] = changed
        delta["choices"] = choices
        out[name] = delta
    return out


def deprecated_delta(old, new):
    out = {}
    for name in sorted(set(old.get("deprecated_values", {})) | set(new.get("deprecated_values", {}))):
        before = old.get("deprecated_values", {}).get(name, {})
        after = new.get("deprecated_values", {}).get(name, {})
        out[name] = {"added": ["%s -> %s" % (k, after[k]) for k in sorted(set(after) - set(before))],
                     "removed": sorted(set(before) - set(after))}
    return out


def surface_findings(old, new):
    """What sparkfleet reads from a running vLLM, on the new release.

    Returns a list of {kind, key, state, detail, needed} with state one of
    same, moved, reworded, gone."""
    import sparkfleet_vllm_fingerprint as fingerprint  # the readers of each literal

    out = []
    for kind in ("metrics", "log_lines"):
        readers = fingerprint.SURFACE_LITERALS[kind]
        for key in sorted(readers):
            entry = readers[key]
            missing = new.get("missing", {}).get(kind, {})
            if key in missing or key not in new[kind]:
                out.append({"kind": kind, "key": key, "state": "gone", "needed": entry["needed"],
                            "detail": "no source of the release has %s: %s %s" % (
                                " or ".join(repr(t) for t in (entry["texts"] or (key,))), entry["read_by"],
                                "stops working" if entry["needed"] else "loses it")})
                continue
            before, after = old[kind].get(key), new[kind][key]
            if kind == "log_lines":
                if before and before["text"] != after["text"]:
                    out.append({"kind": kind, "key": key, "state": "reworded", "needed": False,
                                "detail": "%r is now %r (%s); sparkfleet reads the new text from the fingerprint"
                                          % (before["text"], after["text"], after["file"])})
                elif before and before["file"] != after["file"]:
                    out.append({"kind": kind, "key": key, "state": "moved", "needed": False,
                                "detail": "now in %s (was %s)" % (after["file"], before["file"])})
            elif before and before != after:
                out.append({"kind": kind, "key": key, "state": "moved", "needed": False,
                            "detail": "now in %s (was %s)" % (after, before)})
    if old.get("health") != new.get("health"):
        out.append({"kind": "health", "key": "/health", "state": "changed", "needed": True,
                    "detail": "was %s, now %s: the health gate and the endpoint's checks read it"
                              % (old.get("health"), new.get("health"))})
    for endpoint in sorted(set(old.get("requests", {})) | set(new.get("requests", {}))):
        before = old.get("requests", {}).get(endpoint, {}).get("fields")
        after = new.get("requests", {}).get(endpoint, {}).get("fields")
        if before != after:
            out.append({"kind": "requests", "key": endpoint, "state": "changed", "needed": False,
                        "detail": "request field defaults were %s, now %s (the simulator follows the fingerprint)"
                                  % (before, after)})
    return out


def profile_findings(defaults, profiles, fingerprint, service):
    """[{profile, role, problems, warnings, env}] for every shipped profile's
    head and worker against the release (the checks preflight runs)."""
    surface = vllm_check.Surface.from_fingerprint(fingerprint)
    out = []
    for name in sorted(profiles):
        composed = vllm_profile.compose_profile(defaults, profiles[name])
        env = vllm_check.unknown_env(composed.get("env") or {}, fingerprint["env"])
        for node in NODES:
            argv = vllm_args.render_serve_args(composed, node, service)
            problems, warnings = vllm_check.check_argv(argv, surface)
            out.append({"profile": name, "role": node["role"], "problems": problems, "warnings": warnings,
                        "env": ["%s is not a variable of vLLM %s%s" % (
                            var, fingerprint["release"]["version"], "; nearest: %s" % near if near else "")
                            for var, near in env]})
    return out


def overlay_findings(manifest, overlay_dir, version, read_target):
    """[{entry, state, detail, listed}] for every overlay entry against the
    release's file, decided by the image build's own apply step (dry run);
    ``read_target(path)`` returns the file's bytes or None."""
    import os
    import tempfile

    out = []
    for entry in manifest.get("entries", []):
        listed = version in [str(r) for r in entry.get("releases", [])]
        data = read_target(entry["target"])
        if data is None:
            out.append({"entry": entry["name"], "state": "target gone", "listed": listed,
                        "detail": "%s is not in the release" % entry["target"]})
            continue
        with tempfile.TemporaryDirectory() as root:
            path = os.path.join(root, entry["target"])
            os.makedirs(os.path.dirname(path))
            with open(path, "wb") as handle:
                handle.write(data)
            try:
                state = overlay.apply_entry(entry, overlay_dir, root, dry_run=True)
            except overlay.OverlayError as exc:
                out.append({"entry": entry["name"], "state": "conflicts", "listed": listed,
                            "detail": str(exc).splitlines()[0]})
                continue
        if state == "already-present":
            out.append({"entry": entry["name"], "state": "already upstream", "listed": listed,
                        "detail": "the release carries the fix: stop applying this entry for it"})
            continue
        detail = "applies to %s" % entry["target"]
        if entry.get("kind") == "patch":
            with open(os.path.join(overlay_dir, entry["source"]), encoding="utf-8") as handle:
                _, hunks = overlay.parse_patch(handle.read(), entry["source"])
            lines = data.decode("utf-8").splitlines(True)
            detail += " (%s)" % ", ".join(
                "%s at line %d, written at %d" % (hunk.describe(), overlay.find_block(lines, hunk.old_lines,
                                                                                       hunk.old_start - 1) + 1,
                                                  hunk.old_start) for hunk in hunks)
        out.append({"entry": entry["name"], "state": "applies", "listed": listed, "detail": detail})
    return out


def compare(old, new, defaults, profiles, service, overlay_report):
    return {
        "old": old["release"], "new": new["release"],
        "options": options_delta(old, new),
        "deprecated": deprecated_delta(old, new),
        "json_configs": json_config_delta(old, new),
        "env": keyed_delta(old["env"], new["env"]),
        "surface": surface_findings(old, new),
        "profiles": profile_findings(defaults, profiles, new, service),
        "overlay": overlay_report,
        "missing_files": new.get("missing", {}).get("files", []),
    }


def verdict(report):
    """(valid, one line): valid only when every profile passes, every overlay
    entry applies or is upstream, and nothing a gate needs is gone."""
    version = report["new"]["version"]
    blocking = []
    bad_profiles = sorted({p["profile"] for p in report["profiles"] if p["problems"] or p["env"]})
    if bad_profiles:
        blocking.append("profiles refused: %s" % ", ".join(bad_profiles))
    bad_overlay = [o["entry"] for o in report["overlay"] if o["state"] in ("conflicts", "target gone")]
    if bad_overlay:
        blocking.append("overlay entries that do not apply: %s" % ", ".join(bad_overlay))
    gone = [f["key"] for f in report["surface"] if f["needed"] and f["state"] in ("gone", "changed")]
    if gone:
        blocking.append("gone or changed where a gate needs it: %s" % ", ".join(gone))
    if blocking:
        return False, "VERDICT: vLLM %s is NOT valid for this fleet: %s" % (version, "; ".join(blocking))
    to_list = [o["entry"] for o in report["overlay"] if o["state"] == "applies" and not o["listed"]]
    notes = []
    if to_list:
        notes.append("add %s to releases: of %s in files/overlay/manifest.yml once a canary pair served it"
                     % (version, ", ".join(to_list)))
    upstream = [o["entry"] for o in report["overlay"] if o["state"] == "already upstream"]
    if upstream:
        notes.append("stop applying %s on %s" % (", ".join(upstream), version))
    runs = len(report["profiles"])
    return True, "VERDICT: vLLM %s is valid for this fleet (%d profile launches pass, overlay %s)%s" % (
        version, runs, "applies" if report["overlay"] else "empty", "; " + "; ".join(notes) if notes else "")


def _list(lines, empty="none"):
    return "\n".join("- %s" % line for line in lines) if lines else "- %s" % empty


def render(report):
    """The report as markdown (printed, and kept in docs/vllm-releases/)."""
    old, new = report["old"], report["new"]
    valid, line = verdict(report)
    out = ["# vLLM %s against %s" % (new["version"], old["version"]), "",
           "Wheel `%s`, sha256 `%s`; compared with %s (`%s`)." % (
               new.get("wheel"), new.get("sha256"), old["version"], old.get("wheel")), "",
           "**%s**" % line, ""]
    opts = report["options"]
    out += ["## `vllm serve` options", "", "Added:", _list(opts["added"]), "", "Removed:", _list(opts["removed"]), "",
            "Renamed:", _list(opts["renamed"]), "", "Changed choices:", _list(opts["choices"]), ""]
    dep = []
    for name, delta in report["deprecated"].items():
        dep += ["%s: newly deprecated %s" % (name, v) for v in delta["added"]]
        dep += ["%s: %s no longer deprecated (accepted or gone)" % (name, v) for v in delta["removed"]]
    out += ["## Deprecated values", "", _list(dep), ""]
    js = []
    for name, delta in report["json_configs"].items():
        js += ["`--%s` key added: %s" % (name.replace("_", "-"), k) for k in delta["added"]]
        js += ["`--%s` key removed: %s" % (name.replace("_", "-"), k) for k in delta["removed"]]
        for field, change in delta["choices"].items():
            js.append("`--%s` %s: added %s, removed %s" % (name.replace("_", "-"), field,
                                                           ", ".join(change["added"]) or "none",
                                                           ", ".join(change["removed"]) or "none"))
    out += ["## JSON config keys (speculative, compilation)", "", _list(js), ""]
    out += ["## `VLLM_*` variables", "", "Added:", _list(report["env"]["added"]), "", "Removed:",
            _list(report["env"]["removed"]), ""]
    surf = ["%s `%s` %s: %s" % (f["kind"].replace("_", " "), f["key"], f["state"], f["detail"])
            for f in report["surface"]]
    out += ["## What sparkfleet reads (metrics, log lines, /health)", "",
            _list(surf, "every metric, log line and /health behaviour sparkfleet reads is unchanged"), ""]
    prof = []
    for p in report["profiles"]:
        state = "passes" if not (p["problems"] or p["env"]) else "REFUSED: " + "; ".join(p["problems"] + p["env"])
        warn = " (warnings: %s)" % "; ".join(p["warnings"]) if p["warnings"] else ""
        prof.append("`%s` %s: %s%s" % (p["profile"], p["role"], state, warn))
    out += ["## Profiles (head and worker argv and env, the check preflight runs)", "", _list(prof), ""]
    ov = ["`%s`: %s (%s)%s" % (o["entry"], o["state"], o["detail"],
                               "" if o["listed"] else "; its releases: does not list %s yet" % new["version"])
          for o in report["overlay"]]
    out += ["## Overlay", "", _list(ov, "no entries"), ""]
    return "\n".join(out).rstrip("\n") + "\n", valid
