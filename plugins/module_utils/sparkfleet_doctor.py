# -*- coding: utf-8 -*-
"""The doctor's knowledge: what to collect on a node, how to keep secrets out of
it, and the failure signatures operators keep meeting, each with its fix.

Pure Python, no Ansible imports: used by the sparkfleet_doctor module and the
unit tests.
"""

from __future__ import annotations

import re

# (file name in the bundle, argv). A missing program is reported, not fatal.
# The serving containers' `docker inspect` is added per role (commands()).
COMMANDS = (
    ("containers.txt", ["docker", "ps", "--all", "--no-trunc"]),
    ("images.txt", ["docker", "image", "ls", "--no-trunc"]),
    ("sysctl.txt", ["sysctl", "-a"]),
    ("limits-shell.txt", ["sh", "-c", "ulimit -a"]),
    ("limits-docker.txt", ["systemctl", "show", "docker.service", "-p", "LimitMEMLOCK,LimitSTACK,LimitNOFILE"]),
    ("free.txt", ["free", "-b"]),
    ("dev-shm.txt", ["ls", "-la", "/dev/shm"]),
    ("listening.txt", ["ss", "-ltnp"]),
    ("links.txt", ["ip", "-details", "-statistics", "link", "show"]),
    ("addresses.txt", ["ip", "address", "show"]),
    ("rdma-devices.txt", ["ibv_devices"]),
    ("rdma-devinfo.txt", ["ibv_devinfo", "-v"]),
    ("nvidia-smi.txt", ["nvidia-smi", "-q"]),
    ("units.txt", ["systemctl", "list-units", "--all", "--no-pager", "sparkfleet-*", "docker.service",
                   "earlyoom.service"]),
)

# Files copied as they are (secrets redacted); globs allowed. The pair's state
# records (gate, last known good, start times) come from the play
# (group_vars/all/host.yml names them).
FILES = (
    "/etc/sparkfleet/*",
    "/proc/meminfo",
    "/etc/sysctl.d/60-sparkfleet.conf",
    "/etc/security/limits.d/60-sparkfleet.conf",
    "/etc/docker/daemon.json",
    "/etc/default/earlyoom",
    "/etc/systemd/system/sparkfleet-*.service",
)

# The units whose journals since boot go into the bundle, besides the serving
# units (sparkfleet_units in group_vars/all/fleet.yml, passed to the module).
HOST_UNITS = ("docker", "earlyoom", "sparkfleet-port-guard")


def commands(serving_units):
    """COMMANDS, with `docker inspect` of each serving container (named as its unit) as
    container-<role>.json; ``serving_units``: {role: unit name}."""
    inspect = tuple(("container-%s.json" % role, ["docker", "inspect", unit])
                    for role, unit in sorted(serving_units.items()))
    return COMMANDS[:1] + inspect + COMMANDS[1:]


def units(serving_units):
    """The units whose journals go into the bundle: the serving units, then the host's."""
    return tuple(unit for _, unit in sorted(serving_units.items())) + HOST_UNITS

# GPU driver lines, and the kernel's OOM killer (mm/oom_kill.c: "<who> invoked oom-killer",
# "oom-kill:constraint=...", "Out of memory: Killed process <pid> (<comm>) total-vm:...", its
# "Memory cgroup out of memory:" variant, "oom_reaper: reaped process").
KERNEL_LINE = re.compile(r"Xid|NVRM|GSP|invoked oom-killer|oom-kill:|[Oo]ut of memory: Killed process|oom_reaper")

_SECRET_PATTERNS = (
    # NAME=value and NAME: value where the name says key, token, secret or password.
    (re.compile(r"(?i)(\b[\w.-]*(?:api[_-]?key|token|secret|passw(?:or)?d)[\w.-]*\"?\s*[=:]\s*\"?)([^\s\",]+)"),
     r"\1<redacted>"),
    # --api-key value, in a command line or a JSON argv list.
    (re.compile(r"(--api-key(?:=|\"?,?\s*\"?|\s+))([^\s\",]+)"), r"\1<redacted>"),
    (re.compile(r"(?i)(Bearer\s+)(\S+)"), r"\1<redacted>"),
)


def redact(text, secrets=()):
    """text with secrets replaced: the known values first, then anything that looks like one."""
    for secret in secrets:
        if secret and len(secret) >= 8:
            text = text.replace(secret, "<redacted>")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def kernel_lines(text):
    return [line for line in text.splitlines() if KERNEL_LINE.search(line)]


# (key, what it means, regex over the bundle's text, the fix). The vLLM messages
# are 0.33.0's: "Free memory on device ... is less than desired GPU memory
# utilization" and its external-weights variant (vllm/v1/worker/utils.py),
# EngineDeadError (vllm/v1/engine/exceptions.py); EADDRINUSE is torch's
# TCPStore; "is held by pid" is sparkfleet-cleanup's refusal.
SIGNATURES = (
    ("nccl-memlock",
     "NCCL could not register memory with the RDMA device (locked memory or shared memory too small)",
     re.compile(r"ibv_reg_mr.*Cannot allocate memory|NCCL.*Cannot allocate memory"),
     "memlock must be unlimited for dockerd and the serving container, and /dev/shm large: "
     "re-run site.yml (spark_host limits, spark_service --ulimit/--shm-size) and restart the pair."),
    ("master-port-held",
     "the rendezvous (master) port is held, usually by an orphan VLLM::Worker of an earlier run",
     re.compile(r"EADDRINUSE|[Aa]ddress already in use|port \d+ is held by pid \d+"),
     "run /usr/local/libexec/sparkfleet/sparkfleet-cleanup --dry-run to see the holder; an orphan vLLM "
     "process is stopped by the unit's ExecStartPre, anything else must be freed by hand."),
    ("page-cache",
     "vLLM found less free memory than --gpu-memory-utilization asks for: page cache from earlier loads",
     re.compile(r"less than desired GPU memory utilization|Free memory on device .* is less than"),
     "drop the page cache (sparkfleet-cleanup --drop-caches, which the unit's ExecStartPre runs) and "
     "check the memory preflight's figures in the unit's journal; lower the profile's gpu_memory_utilization "
     "if other processes need the memory."),
    ("overlay-twice",
     "the mxfp4 overlay was applied twice (duplicated block)",
     re.compile(r"UnboundLocalError.*w13"),
     "rebuild the serving image from a clean base (spark_image): the overlay's check refuses a patched base."),
    ("ghost-execstart",
     "the unit's ExecStart names a program that does not exist (status 127 or 203/EXEC)",
     re.compile(r"status=127\b|status=203/EXEC|code=exited, status=127"),
     "re-run site.yml: spark_service installs the launcher on the host and sparkfleet-verify-unit "
     "refuses a unit whose programs are missing."),
    ("start-limit",
     "systemd stopped restarting a unit that kept failing (its start limit was hit)",
     re.compile(r"Start request repeated too quickly"),
     "fix the cause named above, then `systemctl reset-failed <unit>` and start it (or re-run site.yml)."),
    ("oom-kill",
     "the kernel's OOM killer killed a process (unified memory ran out)",
     re.compile(r"[Oo]ut of memory: Killed process \d+"),
     "read kernel.txt for the victim and free.txt for what is left; on a Spark the GPU's memory is the "
     "host's: lower the profile's gpu_memory_utilization or stop what else runs there, and keep earlyoom's "
     "--avoid on vLLM (spark_host)."),
    ("rank-died",
     "a rank died and took the engine down (EngineDeadError)",
     re.compile(r"EngineDeadError"),
     "read the other rank's journal in this bundle for the first error; look for Xid lines in "
     "kernel.txt. systemd restarts the pair; playbooks/health.yml gates it again."),
    ("gpu-xid",
     "the GPU driver reported an Xid error",
     re.compile(r"NVRM: Xid"),
     "note the Xid number in kernel.txt and nvidia-smi.txt; a reboot of the pair (drained at the endpoint "
     "first) clears most, repeated ones need NVIDIA support."),
)


# systemd's words for a unit's main process ending on a signal: `docker run` passes the
# container's end on as 128 + signal (137 SIGKILL, 143 SIGTERM); a process killed itself is
# "code=killed". A stop systemd was asked for logs "Stopping <unit>" first.
_KILLED_EXIT = re.compile(r"Main process exited, code=(?:exited, status=(?:137|143)/|killed, status=(?:9/KILL|15/TERM))")
_STOPPING = re.compile(r"systemd\[\d+\]: Stopping ")
_STARTING = re.compile(r"systemd\[\d+\]: Start(?:ing|ed) ")
RANK_KILLED = ("rank-killed",
               "a rank was killed by a signal while serving (no stop was asked for): the OOM killer, a person or "
               "another tool",
               "look for oom-kill in kernel.txt first; otherwise find who sent it (`docker events`, the auth "
               "log). systemd restarts the rank; `playbooks/status.yml` shows whether the pair healed.")


def _killed_while_serving(texts):
    """(file, line) of the last signal death of a journal's unit that no stop request preceded."""
    hit = None
    for name in sorted(texts):
        if not name.startswith("journal-"):
            continue
        stopping = False
        for line in texts[name].splitlines():
            if _STOPPING.search(line):
                stopping = True
            elif _STARTING.search(line):
                stopping = False
            elif _KILLED_EXIT.search(line) and not stopping:
                hit = (name, line.strip()[:300])
    return hit


def match_signatures(texts):
    """texts: {file name: content}. -> [{key, meaning, fix, file, evidence}] for each signature found,
    with the last matching line as evidence (the most recent occurrence in a journal)."""
    found = []
    for key, meaning, pattern, fix in SIGNATURES:
        hit = None
        for name in sorted(texts):
            for line in texts[name].splitlines():
                if pattern.search(line):
                    hit = (name, line.strip()[:300])
        if hit:
            found.append({"key": key, "meaning": meaning, "fix": fix, "file": hit[0], "evidence": hit[1]})
    killed = _killed_while_serving(texts)
    if killed:
        key, meaning, fix = RANK_KILLED
        found.append({"key": key, "meaning": meaning, "fix": fix, "file": killed[0], "evidence": killed[1]})
    return found


def gid_table(sys_class="/sys/class/infiniband"):
    """The RoCE GID table from sysfs: device port index gid type (non-zero GIDs only)."""
    import glob
    import os
    rows = []
    for path in sorted(glob.glob(os.path.join(sys_class, "*", "ports", "*", "gids", "*"))):
        parts = path.split(os.sep)
        device, port, index = parts[-5], parts[-3], parts[-1]
        try:
            with open(path, encoding="ascii") as handle:
                gid = handle.read().strip()
        except OSError:
            continue
        if not gid or set(gid.replace(":", "")) == {"0"}:
            continue
        kind = ""
        type_path = os.path.join(sys_class, device, "ports", port, "gid_attrs", "types", index)
        try:
            with open(type_path, encoding="ascii") as handle:
                kind = handle.read().strip()
        except OSError:
            pass
        rows.append("%s %s %s %s %s" % (device, port, index, gid, kind))
    return rows


def summary_lines(results, bundle):
    """results: {host: sparkfleet_doctor result} -> the summary the play prints and keeps."""
    lines = ["Bundle: %s (one .tar.gz per node, secrets redacted)" % bundle]
    for host in sorted(results):
        result = results[host]
        found = result.get("signatures") or []
        if not found:
            lines.append("%s: no known failure signature" % host)
        for item in found:
            lines.append("%s: %s (%s)" % (host, item["key"], item["meaning"]))
            lines.append("    seen in %s: %s" % (item["file"], item["evidence"]))
            lines.append("    fix: %s" % item["fix"])
        if result.get("missing"):
            lines.append("    %s lacks (not collected): %s" % (host, ", ".join(result["missing"])))
    return lines
