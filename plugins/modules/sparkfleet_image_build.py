#!/usr/bin/python3
# -*- coding: utf-8 -*-
"""Ansible module: build the serving image with `docker build`, writing its progress as it goes."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_image_build
short_description: Build an image from a context with the docker CLI, step by step on record
description:
  - Runs C(docker build) (BuildKit's plain output or the classic builder's, whichever the node's
    CLI uses) and writes the step it is on (n of m, the instruction) to O(progress_file) as the
    build goes, so an async task can be watched by the job_progress role.
  - Builds nothing when O(tag) already exists (changed=false), so a second run is a no-op.
  - On failure returns the last lines of the build output; on timeout stops the build.
options:
  tag: {description: Image reference to build., type: str, required: true}
  path: {description: Build context directory (with its Dockerfile)., type: path, required: true}
  build_args: {description: Build arguments., type: dict, default: {}}
  pull: {description: Pull newer base images (the pinned base is checked before the build)., type: bool, default: false}
  timeout: {description: Seconds the build may take., type: int, default: 14400}
  progress_file: {description: Where to write the progress (JSON)., type: path}
  progress_run: {description: The run id written into O(progress_file)., type: str, default: ""}
  progress_label: {description: What the progress line calls this build., type: str, default: build}
author: sparkfleet
"""

RETURN = r"""
image_id: {description: The built image's ID., returned: success, type: str}
steps: {description: Build steps the output named., returned: changed, type: int}
cached: {description: Steps taken from the build cache., returned: changed, type: int}
seconds: {description: How long the build took., returned: changed, type: float}
output_tail: {description: The last lines of the build output., returned: changed or failed, type: list}
"""

import collections
import os
import signal
import subprocess
import threading
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sparkfleet_job_progress import ProgressFile, build_step

TAIL_LINES = 40


def image_id(ref):
    result = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
    return result.stdout.decode().strip() if result.returncode == 0 else ""


def is_cached(line):
    """A step the builder took from its cache (BuildKit `#7 CACHED`, classic `---> Using cache`)."""
    line = line.strip()
    return line.endswith(" CACHED") and line.startswith("#") or line == "---> Using cache"


def run_build(argv, progress, timeout):
    """Run the build, feeding progress; returns (returncode, steps, cached, tail)."""
    env = dict(os.environ, BUILDKIT_PROGRESS="plain")
    tail = collections.deque(maxlen=TAIL_LINES)
    steps = cached = 0
    build = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
    # A step can hang without printing, so the timeout is a timer, not a check per line.
    timed_out = []

    def stop():
        timed_out.append(True)
        os.killpg(build.pid, signal.SIGTERM)

    watchdog = threading.Timer(timeout, stop)
    watchdog.start()
    try:
        for raw in build.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            tail.append(line)
            step = build_step(line)
            # Written at once (steps are few): a throttled write could leave a
            # long step showing as the one before it.
            if step:
                steps = max(steps, step[1])
                progress.update(force=True, step=step[0], steps=step[1], instruction=step[2])
            elif is_cached(line):
                cached += 1
                progress.update(force=True, cached=cached)
        code = build.wait()
    finally:
        watchdog.cancel()
    if timed_out:
        tail.append("sparkfleet: build stopped after %d s (timeout)" % timeout)
    return code, steps, cached, list(tail)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            tag=dict(type="str", required=True),
            path=dict(type="path", required=True),
            build_args=dict(type="dict", default={}),
            pull=dict(type="bool", default=False),
            timeout=dict(type="int", default=14400),
            progress_file=dict(type="path"),
            progress_run=dict(type="str", default=""),
            progress_label=dict(type="str", default="build"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    existing = image_id(p["tag"])
    if existing:
        module.exit_json(changed=False, image_id=existing)
    if module.check_mode:
        module.exit_json(changed=True)
    argv = ["docker", "build", "--tag", p["tag"], "--pull=%s" % str(p["pull"]).lower()]
    for key in sorted(p["build_args"]):
        argv += ["--build-arg", "%s=%s" % (key, p["build_args"][key])]
    argv.append(p["path"])
    progress = ProgressFile(p["progress_file"], p["progress_run"], "build", p["progress_label"], step=0, steps=0)
    started = time.time()
    try:
        code, steps, cached, tail = run_build(argv, progress, p["timeout"])
    except OSError as exc:
        progress.finish(False)
        module.fail_json(msg="cannot run docker build: %s" % exc)
    seconds = round(time.time() - started, 1)
    built = image_id(p["tag"]) if code == 0 else ""
    progress.finish(bool(built), steps=steps, cached=cached)
    if not built:
        module.fail_json(msg="docker build of %s failed (exit %d) after %s s at step %s of %s; last lines:\n%s" % (
            p["tag"], code, seconds, progress.state.get("step", 0), steps, "\n".join(tail[-15:])),
            output_tail=tail, steps=steps)
    module.exit_json(changed=True, image_id=built, steps=steps, cached=cached, seconds=seconds, output_tail=tail)


if __name__ == "__main__":
    main()
