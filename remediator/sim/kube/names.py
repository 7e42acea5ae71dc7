"""Generated names, as Kubernetes makes them: ``generateName`` suffixes and template hashes.

``random_suffix`` is apiserver's names.SimpleNameGenerator (5 characters of
k8s.io/apimachinery/pkg/util/rand's alphabet); ``template_hash`` is the controller's
ComputeHash (FNV-1a 32 of the pod template, plus the collision count) rendered through
rand.SafeEncodeString, so ReplicaSets are named ``<deployment>-<8..10 chars>`` and pods
``<replicaset>-<5 chars>`` like on a real cluster. Used by the store and the controllers.
"""

from __future__ import annotations

import json
import random
from typing import Any

# k8s.io/apimachinery/pkg/util/rand: no vowels (no words) and no confusable 0/1/3.
ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"

_rng = random.SystemRandom()


def random_suffix(length: int = 5) -> str:
    """``length`` random characters of ALPHANUMS."""
    return "".join(_rng.choice(ALPHANUMS) for _ in range(length))


def safe_encode(text: str) -> str:
    """rand.SafeEncodeString: each byte mapped onto ALPHANUMS."""
    return "".join(ALPHANUMS[b % len(ALPHANUMS)] for b in text.encode())


def fnv1a_32(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(template: dict[str, Any], collision_count: int = 0) -> str:
    """Stable hash of a pod template (pod-template-hash / controller-revision-hash value).

    The same template always gives the same value; it differs from a real cluster's only
    because the Go structure is printed differently (the apiserver hashes the Go struct dump).
    """
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(collision_count).encode()
    return safe_encode(str(fnv1a_32(data)))
