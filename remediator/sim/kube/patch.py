"""The three PATCH content types the apiserver accepts, applied to plain JSON objects.

* ``application/json-patch+json``: RFC 6902, through the ``jsonpatch`` library;
* ``application/merge-patch+json``: RFC 7386 (maps merge, null deletes, lists replaced);
* ``application/strategic-merge-patch+json``: k8s.io/apimachinery/pkg/util/strategicpatch
  for the fields whose Go types carry ``patchStrategy:"merge"``: lists of containers,
  initContainers, ephemeralContainers, volumes, env, imagePullSecrets (merge key ``name``),
  volumeMounts (``mountPath``), ports (``containerPort``), conditions (``type``),
  ownerReferences (``uid``); other lists are replaced. Directives ``$patch: delete|replace``,
  ``$retainKeys`` and ``$deleteFromPrimitiveList/<field>`` are honoured and
  ``$setElementOrder/<field>`` is accepted and ignored (order is kept as stored).

Called by the HTTP server for PATCH requests. Errors raise ApiError (400 or 415), worded as
the apiserver words them.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from remediator.sim.kube.kinds import ApiError, bad_request

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH)

MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "conditions": "type",
    "ownerReferences": "uid",
}


def unsupported_media_type() -> ApiError:
    accepted = ", ".join(PATCH_TYPES)
    return ApiError(415, "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types include: {accepted}")


def apply_patch(content_type: str, original: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Return a new object: ``original`` with ``patch`` applied per ``content_type``.

    Raises ApiError 415 for another content type, 400 for a patch that does not apply.
    """
    media = (content_type or "").split(";")[0].strip().lower()
    if media == JSON_PATCH:
        if not isinstance(patch, list):
            raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        try:
            return jsonpatch.apply_patch(original, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise ApiError(422 if isinstance(exc, jsonpatch.JsonPatchTestFailed) else 400,
                           "Invalid" if isinstance(exc, jsonpatch.JsonPatchTestFailed) else "BadRequest",
                           f"the server rejected our request due to an error in our request: {exc}") from exc
    if media == MERGE_PATCH:
        if not isinstance(patch, dict):
            raise bad_request("json: cannot unmarshal array into Go value of type map[string]interface {}")
        return merge_patch(original, patch)
    if media == STRATEGIC_MERGE_PATCH:
        if not isinstance(patch, dict):
            raise bad_request("json: cannot unmarshal array into Go value of type map[string]interface {}")
        return strategic_merge(original, patch)
    raise unsupported_media_type()


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(original: Any, patch: Any, field_name: str | None = None) -> Any:
    """Strategic merge patch of ``patch`` onto ``original`` (see module docstring)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(result.get(name), list):
                result[name] = [v for v in result[name] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, MERGE_KEYS[key], key)
        elif isinstance(value, list):
            result[key] = [_strip_directives(v) for v in value]
        else:
            result[key] = copy.deepcopy(value)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _merge_list(original: list[Any], patch: list[Any], merge_key: str, field_name: str) -> list[Any]:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [_strip_directives(p) for p in patch if not (isinstance(p, dict) and p.get("$patch"))]
    result = copy.deepcopy(original)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise bad_request(f"map: {item} does not contain declared merge key: {merge_key}")
        index = next((i for i, cur in enumerate(result)
                      if isinstance(cur, dict) and cur.get(merge_key) == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
            continue
        if index is None:
            result.append(_strip_directives(item))
        else:
            result[index] = strategic_merge(result[index], item, field_name)
    return result
