"""Reboot safety: restarting lab node containers brings the pair back to a
healthy endpoint without running Ansible."""

import subprocess
import time

from conftest import wait_serving


def restart(*containers):
    subprocess.run(["docker", "restart", "--time", "20"] + list(containers), check=True, capture_output=True)


def test_both_nodes_reboot(lab, record_property):
    head, worker = lab["a"]["head"], lab["a"]["worker"]
    started = time.monotonic()
    restart(head["ansible_host"], worker["ansible_host"])
    wait_serving(head["sparkfleet_mgmt_address"], deadline_s=300)
    total = time.monotonic() - started
    record_property("pair_a_both_rebooted_seconds_to_healthy", round(total, 1))
    print("pair a, both nodes rebooted: healthy after %.1f s" % total)


def test_head_only_reboot_waits_for_its_worker(lab, record_property):
    head = lab["b"]["head"]
    started = time.monotonic()
    restart(head["ansible_host"])
    wait_serving(head["sparkfleet_mgmt_address"], deadline_s=300)
    total = time.monotonic() - started
    record_property("pair_b_head_rebooted_seconds_to_healthy", round(total, 1))
    print("pair b, head rebooted: healthy after %.1f s" % total)
