# -*- coding: utf-8 -*-
"""Action plugin: watch a pair start, a progress line a round, until the head's API is up.

Runs on the head. Each round reads the head's start-up phase with the
sparkfleet_start_progress module (it waits up to the interval, less when the
phase changes) and then the worker's, over a connection to the worker built
here the way Ansible builds one for delegate_to (the worker's own inventory
variables: address, user, key, become). The loop runs on the controller, so
it takes as many rounds as the start takes; a task file that includes itself
is capped near 200 rounds by Ansible.

The start is over when the head's API is up (the task returns both ranks'
last readings), or fails with the last phase of both ranks and their last
log lines when a rank stops or the start outlasts ``timeout``.
"""

from __future__ import annotations

import os
import sys

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils"))

import sparkfleet_progress as progress  # noqa: E402  pylint: disable=wrong-import-position

display = Display()

MODULE = "sparkfleet_start_progress"

ARGUMENT_SPEC = {
    "pair": {"type": "str", "required": True},
    "worker_host": {"type": "str", "required": True},
    "head_unit": {"type": "str", "required": True},
    "worker_unit": {"type": "str", "required": True},
    "log_lines": {"type": "dict", "required": True},
    "health_url": {"type": "str", "required": True},
    "launch_file": {"type": "path"},
    "history_file": {"type": "path"},
    "interval": {"type": "int", "default": 20},
    "timeout": {"type": "int", "required": True},
}


class ActionModule(ActionBase):
    """sparkfleet_watch_start: pair, worker_host, head_unit, worker_unit, log_lines, health_url,
    launch_file, history_file, interval, timeout."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def _read(self, action, module_args, task_vars, who):
        reading = action._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars)
        if reading.get("failed") or "phase" not in reading:
            raise AnsibleError("reading the %s's start-up phase failed: %s" % (who, reading.get("msg", reading)))
        # Keep a discovered interpreter for the next rounds (as Ansible keeps it in the host's facts).
        discovered = (reading.get("ansible_facts") or {})
        if discovered:
            task_vars["ansible_facts"] = dict(task_vars.get("ansible_facts") or {}, **discovered)
        return reading

    def _worker_action(self, host, task_vars):
        """An action object bound to a connection to ``host``, built from that host's own
        variables as TaskExecutor does for delegate_to, and the variables to run modules with."""
        hostvars = task_vars["hostvars"]
        if host not in hostvars:
            raise AnsibleError("the worker %s is not in the inventory" % host)
        cvars = dict(hostvars.raw_get(host))
        cvars.update(inventory_hostname=host, inventory_hostname_short=host.split(".")[0],
                     ansible_check_mode=False, hostvars=hostvars)
        templar = self._templar.copy_with_new_env(available_variables=cvars)

        name = templar.template(cvars["ansible_connection"]) if cvars.get("ansible_connection") else self._task.connection
        play_context = self._play_context.set_task_and_variable_override(task=self._task, variables=cvars,
                                                                          templar=templar)
        play_context.connection = name
        play_context.remote_addr = templar.template(cvars.get("ansible_host", host))
        connection = self._shared_loader_obj.connection_loader.get(
            name, play_context, new_stdin=None, task_uuid=self._task._uuid, ansible_playbook_pid=str(os.getppid()))
        if not connection:
            raise AnsibleError("the connection plugin '%s' (the worker %s's) was not found" % (name, host))

        become = (boolean(templar.template(cvars["ansible_become"])) if cvars.get("ansible_become") is not None
                  else self._task.become)
        become_plugin = None
        if become:
            method = templar.template(cvars.get("ansible_become_method") or self._task.become_method)
            become_plugin = self._shared_loader_obj.become_loader.get(method)
            if not become_plugin:
                raise AnsibleError("the become method '%s' (the worker %s's) was not found" % (method, host))
        connection.set_become_plugin(become_plugin)
        if become_plugin:
            play_context.set_become_plugin(become_plugin.name)
        play_context.set_attributes_from_plugin(connection)

        task_keys = self._task.dump_attrs()
        task_keys["timeout"] = play_context.timeout
        task_keys.pop("retries", None)
        connection.set_options(task_keys=task_keys, var_options=connection._resolve_option_variables(cvars, templar))
        plugins = [("shell", connection._shell)] + ([("become", connection.become)] if connection.become else [])
        for kind, plugin in plugins:
            options = {var: templar.template(cvars[var])
                       for var in C.config.get_plugin_vars(kind, plugin._load_name) if var in cvars}
            plugin.set_options(task_keys=task_keys, var_options=options)

        action = self._shared_loader_obj.action_loader.get(
            "ansible.legacy.normal", task=self._task, connection=connection, play_context=play_context,
            loader=self._loader, templar=templar, shared_loader_obj=self._shared_loader_obj)
        return action, cvars

    def _say(self, line):
        # On stderr, as the job watch prints: stdout stays the callback's.
        display.display("[%s] %s" % (self._host_name, line), stderr=True)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)[1]
        task_vars = task_vars or {}
        self._host_name = task_vars.get("inventory_hostname", "?")
        worker, worker_vars = self._worker_action(args["worker_host"], task_vars)

        head_args = {"unit": args["head_unit"], "role": "head", "log_lines": args["log_lines"],
                     "health_url": args["health_url"], "wait": max(1, args["interval"])}
        for key in ("launch_file", "history_file"):
            if args[key]:
                head_args[key] = args[key]
        worker_args = {"unit": args["worker_unit"], "role": "worker", "log_lines": args["log_lines"], "wait": 0}

        watched = False
        try:
            while True:
                head = self._read(self, head_args, task_vars, "head")
                tail = self._read(worker, worker_args, worker_vars, "worker")
                # A pair that was already serving is not a start to record.
                watched = watched or head["phase"] != "api_up"
                self._say(progress.report_line(args["pair"], float(head.get("elapsed_s") or 0), head, tail,
                                               head.get("expected_s")))
                if head["phase"] == "api_up":
                    break
                if head["stopped"] or tail["stopped"] or float(head["elapsed_s"]) >= args["timeout"]:
                    # The report is the message: the readings' own fields would bury it.
                    result.update(failed=True, msg=progress.failure_report(args["pair"], head, tail, args["timeout"]))
                    return result
        finally:
            worker._connection.close()
        result.update(changed=False, watched_start=watched,
                      **{role: {k: v for k, v in reading.items() if k not in ("invocation", "ansible_facts")}
                         for role, reading in (("head", head), ("worker", tail))})
        return result
