# -*- coding: utf-8 -*-
"""Build once per fleet: which head builds the serving image, and the order in which the heads
that lack it receive it from heads that hold it (a doubling tree over the management network).

A sender serves one receiver at a time (the peer transfer accepts one peer), so every round
doubles the heads that hold the image: 15 heads lacking it take 4 rounds, where a registry or any
single source would send 15 copies through one uplink.
"""

from __future__ import annotations


class DistributionError(ValueError):
    pass


def build_host(heads, configured="", play_hosts=None, same_image=None):
    """The head that builds: `configured` when set and in the play, else the first head in the play.

    heads: every head of the fleet, in fleet order. same_image: the heads whose image is this
    head's (pairs may run different vLLM releases during a move, each release its own image,
    built once for the heads that serve it); None: every head. Returns (host, note); note
    explains a fallback.
    """
    heads = list(heads)
    if configured and configured not in heads:
        raise DistributionError("spark_image_build_host %r is not a head of the fleet (heads: %s)"
                                % (configured, ", ".join(heads) or "none"))
    if same_image is not None:
        if configured and configured not in same_image:
            configured = ""  # it builds the other image; the first head serving this one builds it
        heads = [h for h in heads if h in same_image]
    in_play = [h for h in heads if play_hosts is None or h in play_hosts]
    if not in_play:
        raise DistributionError("no head of the fleet is in this play, so none can build the image")
    if configured and configured in in_play:
        return configured, ""
    if configured:
        return in_play[0], ("%s (spark_image_build_host) is not in this play (--limit?); %s builds instead"
                            % (configured, in_play[0]))
    return in_play[0], ""


def fanout_plan(image_ids, source):
    """Rounds of {sender, receiver} that bring every head the source's image ID.

    image_ids: {head: image ID it holds now, '' when none}, in fleet order. Heads already holding
    the source's ID receive nothing and serve from the first round on. Returns a list of rounds,
    each a list of {"sender": h, "receiver": h}.
    """
    if source not in image_ids:
        raise DistributionError("the build host %s is not among the heads %s" % (source, ", ".join(image_ids)))
    wanted = image_ids[source]
    if not wanted:
        return []
    holders = [source] + [h for h, i in image_ids.items() if h != source and i == wanted]
    needers = [h for h, i in image_ids.items() if i != wanted]
    rounds = []
    while needers:
        pairs = [{"sender": s, "receiver": r} for s, r in zip(holders, needers)]
        needers = needers[len(pairs):]
        holders = holders + [p["receiver"] for p in pairs]
        rounds.append(pairs)
    return rounds


def round_role(rounds, index, host):
    """This host's part in round `index`: {"sends_to": h or '', "receives_from": h or ''}."""
    part = {"sends_to": "", "receives_from": ""}
    for pair in rounds[index]:
        if pair["sender"] == host:
            part["sends_to"] = pair["receiver"]
        if pair["receiver"] == host:
            part["receives_from"] = pair["sender"]
    return part


def describe(rounds):
    """One line: 'round 1: a -> b; round 2: a -> c, b -> d'."""
    return "; ".join("round %d: %s" % (n, ", ".join("%s -> %s" % (p["sender"], p["receiver"]) for p in pairs))
                     for n, pairs in enumerate(rounds, 1))
