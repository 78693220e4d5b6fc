#!/usr/bin/python3
# -*- coding: utf-8 -*-
"""Ansible module: read the progress an async build or transfer writes, for the progress line."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_job_progress
short_description: Read a long job's progress file and phrase its progress line
description:
  - Reads the JSON progress file that sparkfleet_image_build or sparkfleet_peer_transfer writes
    while it runs as an async task, for run O(run) only (an earlier run's file reads as not
    started).
  - Waits up to O(wait) seconds first, returning early when the job records its end, so a loop
    that calls it prints a line at a steady interval and stops as soon as the job is done.
  - Changes nothing.
options:
  path: {description: The job's progress file., type: path, required: true}
  run: {description: The run id the job was given., type: str, required: true}
  wait:
    description: >-
      Seconds to wait at most before reading; stretched to a tenth of the job's age when that is
      longer (at most 10 minutes), so a job that runs for hours prints a line every few minutes.
    type: int
    default: 15
"""

RETURN = r"""
progress: {description: The job's progress as it recorded it (empty before it starts)., returned: always, type: dict}
finished: {description: The job recorded its end., returned: always, type: bool}
line: {description: The progress line (or the total line once finished)., returned: always, type: str}
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sparkfleet_job_progress import progress_line, read, total_line, watch_wait

POLL_S = 0.5


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            run=dict(type="str", required=True),
            wait=dict(type="int", default=15),
        ),
        supports_check_mode=True,
    )
    p = module.params
    state = read(p["path"], p["run"])
    elapsed = time.time() - float(state["started"]) if state and state.get("started") else 0.0
    deadline = time.time() + max(watch_wait(p["wait"], elapsed), 0)
    while not (state and state.get("finished")) and time.time() < deadline:
        time.sleep(POLL_S)
        state = read(p["path"], p["run"])
    finished = bool(state and state.get("finished"))
    module.exit_json(changed=False, progress=state or {}, finished=finished,
                     line=total_line(state) if finished else progress_line(state))


if __name__ == "__main__":
    main()
