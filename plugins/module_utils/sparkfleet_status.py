# -*- coding: utf-8 -*-
"""The fleet's status: one row per pair from its nodes' readings and the endpoint's view.

``sparkfleet_node_status`` (a module) reads each node; ``fleet_rows`` joins
both nodes of a pair with HAProxy's state of its head; ``table_lines`` prints
the rows as the table playbooks/status.yml shows. Pure Python, no Ansible
imports: used by the module, the filter plugin and the unit tests.
"""

from __future__ import annotations

# (key, heading) in table order.
COLUMNS = (
    ("pair", "pair"),
    ("serving", "serving"),
    ("endpoint", "endpoint"),
    ("profile", "profile"),
    ("image", "image"),
    ("provenance", "provenance"),
    ("lkg_age", "last good"),
    ("uptime", "uptime"),
    ("kv_cache_tokens", "KV tokens"),
    ("requests", "run/wait"),
    ("spec_acceptance", "spec acc"),
    ("last_gate", "last gate"),
)

def age_text(seconds):
    """4 s, 12 min, 3 h 05 min, 2 d 04 h: how long ago, or how long up."""
    if seconds is None:
        return "-"
    seconds = int(max(seconds, 0))
    if seconds < 120:
        return "%d s" % seconds
    if seconds < 7200:
        return "%d min" % (seconds // 60)
    if seconds < 172800:
        return "%d h %02d min" % (seconds // 3600, seconds % 3600 // 60)
    return "%d d %02d h" % (seconds // 86400, seconds % 86400 // 3600)


def short_image(image_id):
    return (image_id or "").replace("sha256:", "")[:12] or "-"


def provenance_text(labels, image_ref=""):
    """What the image was built from, in a few words, from its io.sparkfleet.* labels."""
    labels = labels or {}
    if "io.sparkfleet.build-time" not in labels:
        return "prebuilt %s" % image_ref if image_ref else "prebuilt"
    # The base, pins and overlay hashes are in the JSON copy (labels) and playbooks/image_provenance.yml.
    built = labels.get("io.sparkfleet.build-time", "?").replace("T", " ")[:16]
    return "vLLM %s, built %s" % (labels.get("io.sparkfleet.vllm-version", "?"), built)


def _gate_text(gate, now):
    if not gate:
        return "-"
    when = age_text(now - gate["time"]) + " ago" if gate.get("time") else ""
    if gate.get("ok"):
        return ("passed " + when).strip()
    # No ": " in a cell: the YAML callback would quote that row and shift it.
    return ("FAILED (%s) %s" % (gate.get("check") or "?", when)).strip()


def _endpoint_state(server):
    if server is None:
        return "not listed"
    state = server.get("admin_state", "?")
    if state == "ready" and server.get("health") not in ("up", "no check"):
        state = server.get("health", "down")
    return state


def merge_endpoint_views(views):
    """One view of the heads from every endpoint host's: {endpoint host: {head: server}, or None
    when it did not answer} -> {head: server}, or None when the fleet has no endpoint host.

    Where the hosts that answered agree on a head, that is its state; where they disagree
    (a head drained on one and ready on the other: clients reach whichever holds the virtual
    IP), the head reads "split (<host> <state>, ...)", which is not serving. With none
    answering, every head is "not listed", as with one endpoint host that does not answer.
    """
    if views is None or not dict(views):
        return None
    answered = {host: dict(view) for host, view in dict(views).items() if view is not None}
    merged = {}
    for head in sorted(set().union(*(set(view) for view in answered.values())) if answered else ()):
        states = {host: _endpoint_state(view.get(head)) for host, view in sorted(answered.items())}
        if len(set(states.values())) == 1:
            merged[head] = next(view[head] for view in answered.values() if head in view)
        else:
            # No ": " in a cell: the YAML callback would quote the row and shift it.
            merged[head] = {"admin_state": "split (%s)" % ", ".join("%s %s" % item for item in states.items()),
                            "health": "split"}
    return merged


def fleet_rows(pairs, endpoint_servers, now):
    """pairs: [{pair, head, worker, head_status, worker_status}] -> one row per pair.

    A pair serves when its head's API answers /health, its worker's unit is
    active and the endpoint routes to its head (ready and up); a fleet without
    an endpoint judges on the first two. ``endpoint_servers``: {head: server}
    (``merge_endpoint_views`` of every endpoint host's), None without an endpoint.
    """
    rows = []
    for pair in pairs:
        head = pair.get("head_status") or {}
        worker = pair.get("worker_status") or {}
        server = (endpoint_servers or {}).get(pair["head"]) if endpoint_servers is not None else None
        endpoint = "no endpoint" if endpoint_servers is None else _endpoint_state(server)
        api_up = bool(head.get("api_up"))
        worker_up = worker.get("active_state", "").startswith("active")
        routed = endpoint in ("ready", "no endpoint")
        problems = [text for bad, text in ((not api_up, "head API down"), (not worker_up, "worker unit " + (worker.get("active_state") or "unknown")),
                                           (not routed, "endpoint " + endpoint)) if bad]
        lkg = head.get("lkg") or {}
        metrics = head.get("metrics") or {}
        spec = head.get("spec_acceptance")
        rows.append({
            "pair": pair["pair"],
            "head": pair["head"],
            "worker": pair["worker"],
            "serving": "yes" if not problems else "NO (%s)" % ", ".join(problems),
            "serving_ok": not problems,
            "endpoint": endpoint,
            "profile": head.get("profile") or "-",
            "image": short_image(head.get("image_id")) + (
                "" if not worker.get("image_id") or worker.get("image_id") == head.get("image_id")
                else " (worker %s!)" % short_image(worker.get("image_id"))),
            "image_id": head.get("image_id") or "",
            "images_agree": bool(head.get("image_id")) and head.get("image_id") == worker.get("image_id"),
            "provenance": provenance_text(head.get("labels"), head.get("image_ref", "")),
            "lkg_age": (age_text(now - lkg["time"]) + (" (running)" if lkg.get("image_id") == head.get("image_id")
                                                        else " (other)")) if lkg.get("time") else "none",
            "uptime": age_text(head.get("uptime_s")) if head.get("uptime_s") is not None else "-",
            "kv_cache_tokens": "{:,}".format(head["kv_cache_tokens"]) if head.get("kv_cache_tokens") else "-",
            "requests": "%d/%d" % (metrics.get("vllm:num_requests_running", 0), metrics.get("vllm:num_requests_waiting", 0))
                        if metrics else "-",
            "spec_acceptance": "%.2f" % spec if spec is not None else "-",
            "last_gate": _gate_text(head.get("gate"), now),
            "raw": {"head": head, "worker": worker, "endpoint": server},
        })
    return rows


def table_lines(rows):
    """The rows as a fixed-width table, a heading line first."""
    widths = {key: max([len(title)] + [len(str(row[key])) for row in rows]) for key, title in COLUMNS}
    lines = ["  ".join(title.ljust(widths[key]) for key, title in COLUMNS).rstrip()]
    for row in rows:
        lines.append("  ".join(str(row[key]).ljust(widths[key]) for key, _ in COLUMNS).rstrip())
    return lines
