# -*- coding: utf-8 -*-
"""Which serving images and build contexts a node keeps, and which it may remove.

Kept: the image the unit runs, the last-known-good one, and the newest
`keep_others` other images of the repository; a build context is kept when its
tag is. Pure Python, no Ansible imports: used by the sparkfleet_image_prune
module and the unit tests.
"""

from __future__ import annotations


def plan(images, keep_ids, keep_others, contexts):
    """images: [{id, ref, created}] of the serving repository (newest first or not);
    keep_ids: image IDs that must stay; contexts: build context names (tags).

    -> {"keep": [ref], "remove": [ref], "remove_contexts": [name]}."""
    keep_ids = {image_id for image_id in keep_ids if image_id}
    ordered = sorted(images, key=lambda image: image["created"], reverse=True)
    kept_ids = set(keep_ids)
    others = []
    for image in ordered:
        if image["id"] not in kept_ids and image["id"] not in others:
            others.append(image["id"])
    kept_ids.update(others[:max(int(keep_others), 0)])
    keep = [image["ref"] for image in ordered if image["id"] in kept_ids]
    remove = [image["ref"] for image in ordered if image["id"] not in kept_ids]
    kept_tags = {ref.rsplit(":", 1)[-1] for ref in keep}
    remove_contexts = sorted(name for name in contexts if name not in kept_tags)
    return {"keep": keep, "remove": remove, "remove_contexts": remove_contexts}
