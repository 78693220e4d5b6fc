"""The fleet status table: rows joined from both nodes and the endpoint, and how they read."""

import sparkfleet_status as status

NOW = 1_800_000_000.0
LABELS = {"io.sparkfleet.build-time": "2026-11-26T19:24:03Z", "io.sparkfleet.vllm-version": "0.33.0",
          "io.sparkfleet.base": "nvcr.io/nvidia/vllm@sha256:abc"}


def head(**over):
    reading = {"active_state": "active/running", "uptime_s": 3720.0, "image_id": "sha256:2b4eaa0f1713aece47",
               "profile": "balanced", "labels": LABELS, "api_up": True,
               "lkg": {"time": NOW - 86400 * 3 - 7200, "image_id": "sha256:2b4eaa0f1713aece47"},
               "gate": {"ok": True, "time": NOW - 300, "check": None},
               "metrics": {"vllm:num_requests_running": 3.0, "vllm:num_requests_waiting": 1.0},
               "spec_acceptance": 1.812, "kv_cache_tokens": 511748}
    reading.update(over)
    return reading


def worker(**over):
    reading = {"active_state": "active/running", "image_id": "sha256:2b4eaa0f1713aece47", "api_up": False}
    reading.update(over)
    return reading


def pair(name="a", h=None, w=None):
    return {"pair": name, "head": "spark-%s1" % name, "worker": "spark-%s2" % name,
            "head_status": head() if h is None else h, "worker_status": worker() if w is None else w}


def servers(state="ready", health="up", host="spark-a1"):
    return {host: {"admin_state": state, "health": health}}


def test_a_healthy_pair_reads_as_serving_with_every_figure():
    row = status.fleet_rows([pair()], servers(), NOW)[0]
    assert row["serving"] == "yes" and row["serving_ok"]
    assert row["endpoint"] == "ready" and row["profile"] == "balanced"
    assert row["image"] == "2b4eaa0f1713" and row["images_agree"]
    assert row["provenance"] == "vLLM 0.33.0, built 2026-11-26 19:24"
    assert row["lkg_age"] == "3 d 02 h (running)" and row["uptime"] == "62 min"
    assert row["kv_cache_tokens"] == "511,748" and row["requests"] == "3/1" and row["spec_acceptance"] == "1.81"
    assert row["last_gate"] == "passed 5 min ago"


def test_a_drained_head_is_not_serving_and_says_why():
    row = status.fleet_rows([pair()], servers(state="drain"), NOW)[0]
    assert row["endpoint"] == "drain" and row["serving"] == "NO (endpoint drain)" and not row["serving_ok"]
    down = status.fleet_rows([pair()], servers(health="down"), NOW)[0]
    assert down["endpoint"] == "down" and down["serving"] == "NO (endpoint down)"


def test_dead_ranks_and_a_failed_gate():
    rows = status.fleet_rows([pair(h=head(api_up=False, gate={"ok": False, "check": "clean-output", "time": NOW - 7300}),
                                   w=worker(active_state="failed/failed"))], servers(), NOW)
    assert rows[0]["serving"] == "NO (head API down, worker unit failed/failed)"
    # No ": " in a cell (the callback would quote the row and shift its columns).
    assert rows[0]["last_gate"] == "FAILED (clean-output) 2 h 01 min ago"


def test_disagreeing_images_and_an_older_last_known_good_are_flagged():
    row = status.fleet_rows([pair(w=worker(image_id="sha256:99aa00bb11cc22"),
                                  h=head(lkg={"time": NOW - 90, "image_id": "sha256:other"}))], servers(), NOW)[0]
    assert row["image"] == "2b4eaa0f1713 (worker 99aa00bb11cc!)" and not row["images_agree"]
    assert row["lkg_age"] == "90 s (other)"


def test_without_an_endpoint_or_readings():
    rows = status.fleet_rows([pair(h={}, w={})], None, NOW)
    assert rows[0]["endpoint"] == "no endpoint"
    assert rows[0]["serving"] == "NO (head API down, worker unit unknown)"
    assert rows[0]["lkg_age"] == "none" and rows[0]["last_gate"] == "-" and rows[0]["provenance"] == "prebuilt"
    assert status.fleet_rows([pair()], {}, NOW)[0]["endpoint"] == "not listed"


def test_table_columns_line_up():
    rows = status.fleet_rows([pair("a"), pair("b", h=head(api_up=False))],
                             dict(servers(), **servers(state="maint", host="spark-b1")), NOW)
    lines = status.table_lines(rows)
    assert lines[0].split()[:3] == ["pair", "serving", "endpoint"]
    start = lines[0].index("endpoint")
    assert lines[1][start:].startswith("ready") and lines[2][start:].startswith("maint")
    assert len(lines) == 3


def test_age_text():
    assert [status.age_text(s) for s in (None, 5, 600, 7300, 200000)] == ["-", "5 s", "10 min", "2 h 01 min",
                                                                         "2 d 07 h"]


def test_every_endpoint_hosts_view_counts_and_a_split_is_not_serving():
    both = status.merge_endpoint_views({"gw": servers(), "gw2": servers()})
    assert status.fleet_rows([pair()], both, NOW)[0]["endpoint"] == "ready"
    split = status.merge_endpoint_views({"gw": servers(), "gw2": servers(state="drain")})
    row = status.fleet_rows([pair()], split, NOW)[0]
    assert row["endpoint"] == "split (gw ready, gw2 drain)" and not row["serving_ok"]
    assert row["serving"] == "NO (endpoint split (gw ready, gw2 drain))"
    # Listed on one host only, or down on one: a split too.
    assert status.fleet_rows([pair()], status.merge_endpoint_views({"gw": servers(), "gw2": {}}), NOW)[0][
        "endpoint"] == "split (gw ready, gw2 not listed)"
    assert status.fleet_rows([pair()], status.merge_endpoint_views(
        {"gw": servers(), "gw2": servers(health="down")}), NOW)[0]["endpoint"] == "split (gw ready, gw2 down)"


def test_an_endpoint_host_that_does_not_answer_is_left_out_of_the_view():
    view = status.merge_endpoint_views({"gw": None, "gw2": servers(state="drain")})
    assert status.fleet_rows([pair()], view, NOW)[0]["endpoint"] == "drain"
    # None answering: every head is "not listed"; no endpoint hosts: "no endpoint".
    assert status.fleet_rows([pair()], status.merge_endpoint_views({"gw": None}), NOW)[0]["endpoint"] == "not listed"
    assert status.merge_endpoint_views({}) is None
    assert status.fleet_rows([pair()], status.merge_endpoint_views({}), NOW)[0]["endpoint"] == "no endpoint"
