# -*- coding: utf-8 -*-
"""Action plugin: watch one async job on a host until it ends, printing its progress line.

The loop runs here, on the controller (the way ansible.builtin.reboot waits for a
host), instead of in a task file that includes itself: each round runs the
sparkfleet_job_progress module on the host (it waits up to the interval, less when
the job records its end) and, while the job is still running, Ansible's own
async_status; the line is printed as the round ends. Once the job has ended, its
total line is printed and its result (async_status', with the job's own return
values and error) becomes this task's result, so a failed job fails the task with
its own message.
"""

from __future__ import annotations

import time

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.utils.vars import merge_hash

display = Display()

# Seconds between async_status polls once the job's progress file says it ended
# (the job records its end a moment before Ansible's async wrapper writes its result).
FINISH_POLL_S = 1.0

ARGUMENT_SPEC = {
    "jid": {"type": "str", "required": True},
    "path": {"type": "path", "required": True},
    "run": {"type": "str", "required": True},
    "interval": {"type": "int", "default": 15},
    "timeout": {"type": "int", "default": 86400},
}


class ActionModule(ActionBase):
    """sparkfleet_watch_job: jid, path (the job's progress file), run (its run id), interval, timeout."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def _job_status(self, jid, async_dir, task_vars):
        status = self._execute_module(module_name="ansible.legacy.async_status", task_vars=task_vars,
                                      module_args={"jid": jid, "_async_dir": async_dir})
        for key in ("started", "finished"):
            status[key] = bool(status.get(key))
        return status

    def _progress(self, args, wait, task_vars):
        result = self._execute_module(module_name="sparkfleet_job_progress", task_vars=task_vars,
                                      module_args={"path": args["path"], "run": args["run"], "wait": wait})
        if result.get("failed"):
            raise AnsibleError("reading the job's progress file %s failed: %s"
                               % (args["path"], result.get("msg", result)))
        return result

    def _say(self, line):
        # Printed as the round ends (a worker's display goes through Ansible's result queue), on
        # stderr, as progress goes: stdout stays the callback's own (the JSON callback's document).
        display.display("[%s] %s" % (self._host_name, line), stderr=True)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)[1]
        self._host_name = (task_vars or {}).get("inventory_hostname", "?")
        async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
        deadline = time.monotonic() + args["timeout"]

        # Rounds: a line each, until the job records its end or Ansible's wrapper reports it over.
        status = None
        while time.monotonic() < deadline:
            progress = self._progress(args, args["interval"], task_vars)
            if progress["finished"]:
                break
            status = self._job_status(args["jid"], async_dir, task_vars)
            if status["finished"]:
                break
            self._say(progress["line"])
        # The job's end as Ansible's async wrapper records it (its own async timeout ends it at the latest).
        while (status is None or not status["finished"]) and time.monotonic() < deadline:
            status = self._job_status(args["jid"], async_dir, task_vars)
            if not status["finished"]:
                time.sleep(FINISH_POLL_S)
        if status is None or not status["finished"]:
            result.update(failed=True, msg="job %s did not end within %d s" % (args["jid"], args["timeout"]))
            return result
        final = self._progress(args, 0, task_vars)
        if final["finished"]:
            self._say(final["line"])
        result = merge_hash(result, status)
        result["ansible_job_id"] = args["jid"]
        result["progress"] = final.get("progress", {})
        return result
