#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: drain, ready or inspect a head at the fleet endpoint (HAProxy runtime API)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_haproxy
short_description: Drain, ready or inspect a pair head in the fleet endpoint's HAProxy
description:
  - Talks to HAProxy's runtime API over its unix socket (stdlib only, no socat needed).
  - With O(server) and O(state=drain), O(state=ready) or O(state=maint), sets that server's admin
    state; C(changed) only when the state actually changes. Check mode reports what would change.
  - With O(wait_idle=true), then waits until the server has no current sessions (C(scur) 0 in
    C(show stat)), at most O(timeout) seconds; failing names the server and the sessions left.
  - With O(state=info) (the default), changes nothing and reports every server of O(backend).
  - Admin state is read from C(show servers state) bits, health and sessions from C(show stat).
options:
  socket:
    description: Path of the runtime API socket (C(stats socket ... level admin)); the playbooks pass
      C(fleet_endpoint_admin_socket).
    type: path
    required: true
  backend:
    description: Backend holding the heads; the playbooks pass C(fleet_endpoint_backend).
    type: str
    required: true
  server:
    description: Server to act on (the head's inventory hostname). Required unless O(state=info).
    type: str
  state:
    description: Admin state to set; C(info) only reports.
    type: str
    choices: [info, ready, drain, maint]
    default: info
  wait_idle:
    description: After setting the state, wait until the server has 0 current sessions.
    type: bool
    default: false
  timeout:
    description: Seconds O(wait_idle) waits at most (the drain bound).
    type: int
    default: 300
  on_timeout:
    description:
      - What O(wait_idle) does when the server still has sessions at O(timeout).
      - C(fail) fails naming the sessions left. C(cut) closes them at the endpoint
        (C(shutdown sessions server)), reports how many in RV(cut) and succeeds, so
        a stop that follows never waits on answers longer than the drain bound.
    type: str
    choices: [fail, cut]
    default: fail
  interval:
    description: Seconds between polls while waiting.
    type: float
    default: 1.0
  refuse_last:
    description:
      - Refuse to drain or maintain a server when no other server of the backend takes requests
        (it would take the whole endpoint down). Set false for a single-pair fleet.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Drain a head and wait for its in-flight completions
  sparkfleet_haproxy:
    socket: /run/haproxy/admin.sock
    backend: vllm_heads
    server: spark-a1
    state: drain
    wait_idle: true
    timeout: 600
  delegate_to: lab-endpoint

- name: Read every head's state
  sparkfleet_haproxy:
    socket: /run/haproxy/admin.sock
    backend: vllm_heads
  register: endpoint
"""

RETURN = r"""
servers:
  description:
    - Every server of the backend after the change, keyed by name. Each holds C(status) (show stat
      text, e.g. C(UP), C(DOWN 1/2), C(DRAIN), C(MAINT)), C(admin_state) (ready, drain or maint),
      C(admin_bits), C(operational_state) (stopped, starting, running, stopping), C(health)
      (up, down, no check, maint), C(serving) (takes new requests), C(scur), C(qcur), C(stot),
      C(check_status), C(check_desc), C(addr).
  returned: always
  type: dict
server:
  description: The named server's entry of RV(servers) (after the change and any wait).
  returned: when O(server) is set
  type: dict
previous_state:
  description: The server's admin state before this task.
  returned: when O(server) is set
  type: str
others_serving:
  description: Other servers of the backend taking new requests, sorted.
  returned: when O(server) is set
  type: list
  elements: str
waited_s:
  description: Seconds spent waiting for the server to become idle.
  returned: when O(wait_idle=true) and not in check mode
  type: float
in_flight:
  description: Sessions the server had when the wait began (the requests the drain waited for).
  returned: when O(wait_idle=true) and not in check mode
  type: int
cut:
  description: Sessions still open at O(timeout) and closed at the endpoint (O(on_timeout=cut)); 0 when none.
  returned: when O(wait_idle=true) and not in check mode
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sparkfleet_haproxy import Endpoint, HAProxyError


def run(module, endpoint, result):
    p = module.params
    if p["state"] == "info" and not p["server"]:
        result["servers"] = endpoint.servers()
        return result
    if not p["server"]:
        raise HAProxyError("state=%s needs server" % p["state"])
    if p["wait_idle"] and p["state"] not in ("drain", "maint"):
        raise HAProxyError("wait_idle needs state drain or maint (a ready server keeps taking requests)")
    servers = endpoint.servers()
    before = endpoint.server(p["server"], servers)
    result["previous_state"] = before["admin_state"]
    result["others_serving"] = endpoint.others_serving(p["server"], servers)
    if (p["state"] in ("drain", "maint") and before["admin_state"] == "ready" and p["refuse_last"]
            and not result["others_serving"]):
        raise HAProxyError("refusing to %s %s/%s: no other server of the backend takes requests, the endpoint "
                           "would serve nothing (refuse_last=false allows it)"
                           % (p["state"], p["backend"], p["server"]))
    if p["state"] != "info":
        result["changed"] = endpoint.set_state(p["server"], p["state"], check_mode=module.check_mode)
    if p["wait_idle"] and not module.check_mode:
        result["in_flight"] = before["scur"]
        waited, left = endpoint.wait_idle(p["server"], p["timeout"], p["interval"],
                                          raise_on_timeout=p["on_timeout"] == "fail")
        if left:
            endpoint.cut_sessions(p["server"])
        result["waited_s"] = round(waited, 1)
        result["cut"] = left
    result["servers"] = endpoint.servers()
    result["server"] = result["servers"][p["server"]]
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            socket=dict(type="path", required=True),
            backend=dict(type="str", required=True),
            server=dict(type="str"),
            state=dict(type="str", default="info", choices=["info", "ready", "drain", "maint"]),
            wait_idle=dict(type="bool", default=False),
            timeout=dict(type="int", default=300),
            on_timeout=dict(type="str", default="fail", choices=["fail", "cut"]),
            interval=dict(type="float", default=1.0),
            refuse_last=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    endpoint = Endpoint(module.params["socket"], module.params["backend"])
    result = {"changed": False}
    try:
        run(module, endpoint, result)
    except HAProxyError as exc:
        module.fail_json(msg=str(exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
