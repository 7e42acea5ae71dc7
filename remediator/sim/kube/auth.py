"""Authentication and RBAC authorization of the emulator, as the API server does them.

A bearer token registered with ``Emulator.add_service_account_token(token, rules)`` is a
service account (``system:serviceaccount:<namespace>:<name>``, in the groups
``system:serviceaccounts``, ``system:serviceaccounts:<namespace>`` and
``system:authenticated``) bound to ``rules`` (rbac/v1 PolicyRules as JSON: ``apiGroups``,
``resources``, ``verbs``, ``resourceNames``, ``nonResourceURLs``), as a ClusterRoleBinding to
a ClusterRole of those rules binds it. Besides its own rules it gets what every authenticated
user gets from the bootstrap ClusterRoles (``system:discovery``, ``system:basic-user``,
``system:public-info-viewer``): discovery and ``/version`` stay readable.

Every request of such a token is authorized as the API server authorizes it:

* ``request_info``: the request's attributes, as k8s.io/apiserver
  pkg/endpoints/request/requestinfo.go ``NewRequestInfo`` (GET of one object ``get``, of a
  collection ``list``, or ``watch`` with ``?watch``; POST ``create``, PUT ``update``, PATCH
  ``patch``, DELETE ``delete``, of a collection ``deletecollection``; subresources; the name of
  a list from ``fieldSelector=metadata.name=``); non-resource requests (``/version``, ``/api``,
  ``/apis/apps/v1``) with the lower-cased HTTP method as their verb;
* ``rule_allows``: rbac/v1 evaluation_helpers.go (``VerbMatches``, ``APIGroupMatches``,
  ``ResourceMatches`` with ``*/subresource``, ``ResourceNameMatches``,
  ``NonResourceURLMatches`` with a trailing ``*``);
* ``forbidden``: the 403 Status of pkg/endpoints/handlers/responsewriters/errors.go
  ``Forbidden`` / ``forbiddenMessage`` and apimachinery's ``NewForbidden``, e.g.
  ``deployments.apps "checkout" is forbidden: User "system:serviceaccount:remediator:remediator"
  cannot patch resource "deployments" in API group "apps" in the namespace "prod"``.

A token nobody registered is answered 401 Unauthorized, as the API server answers one it
cannot authenticate; the kubeconfig placeholder token ``emulator`` and requests without a
token keep full access (the emulator's admin user), so clients that do not opt in are
unaffected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ADMIN_TOKEN = "emulator"
"""The placeholder token ``Emulator.write_kubeconfig`` and ``api_client`` send by default:
full access, as without a token."""

API_PREFIXES = ("api", "apis")
GROUPLESS_API_PREFIXES = ("api",)
SPECIAL_VERBS = ("proxy", "watch")
SPECIAL_VERBS_NO_SUBRESOURCES = ("proxy",)
NAMESPACE_SUBRESOURCES = ("status", "finalize")

DISCOVERY_RULES: tuple[dict[str, Any], ...] = (
    # system:discovery (bootstrappolicy ClusterRoles, bound to system:authenticated)
    {"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
                         "/readyz", "/version", "/version/"], "verbs": ["get"]},
    # system:public-info-viewer
    {"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]},
    # system:basic-user
    {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
     "verbs": ["create"]},
    {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
)
"""What every authenticated user may do besides its own bindings."""


@dataclass(frozen=True)
class RequestInfo:
    """A request's authorization attributes (apiserver ``request.RequestInfo``)."""

    is_resource_request: bool
    path: str
    verb: str
    api_prefix: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""


@dataclass(frozen=True)
class ServiceAccount:
    """A service account token's user and the PolicyRules bound to it."""

    namespace: str
    name: str
    rules: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"


def _split_path(path: str) -> list[str]:
    path = path.strip("/")
    return path.split("/") if path else []


def _watch_param(query: dict[str, list[str]]) -> bool:
    """metav1 bool conversion of ``watch`` (Convert_Slice_string_To_bool): absent, ``""``,
    ``0`` and ``false`` (any case) are false, anything else true."""
    values = query.get("watch") or []
    if not values:
        return False
    first = values[0]
    return not (first in ("", "0") or first.lower() == "false")


def _valid_path_segment(name: str) -> bool:
    """apimachinery path.IsValidPathSegmentName."""
    return name not in (".", "..") and "/" not in name and "%" not in name


def _exact_name(field_selector: str) -> str | None:
    """``fields.Selector.RequiresExactMatch("metadata.name")`` of a field selector."""
    for term in field_selector.split(","):
        term = term.strip()
        if "!=" in term:
            continue
        key, op, value = term.partition("==") if "==" in term else term.partition("=")
        if op and key.strip() == "metadata.name":
            return value.strip()
    return None


def request_info(method: str, path: str, query: dict[str, list[str]] | None = None) -> RequestInfo:
    """The attributes the API server authorizes a request by (requestinfo.go NewRequestInfo).

    ``query``: every value of each query parameter (``urllib.parse.parse_qs``).
    """
    query = query or {}
    non_resource = RequestInfo(is_resource_request=False, path=path, verb=method.lower())
    parts = _split_path(path)
    if len(parts) < 3 or parts[0] not in API_PREFIXES:
        return non_resource
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix not in GROUPLESS_API_PREFIXES:
        if len(parts) < 3:
            return non_resource
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    if parts[0] in SPECIAL_VERBS:
        if len(parts) < 2:
            return non_resource  # the API server refuses it; nothing to authorize as a resource
        verb, parts = parts[0], parts[1:]
    else:
        verb = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete"}.get(method.upper(), "")
    namespace = ""
    if parts[0] == "namespaces":
        if len(parts) > 1:
            namespace = parts[1]
            if len(parts) > 2 and parts[2] not in NAMESPACE_SUBRESOURCES:
                parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) >= 2 else ""
    subresource = parts[2] if len(parts) >= 3 and verb not in SPECIAL_VERBS_NO_SUBRESOURCES else ""
    if not name and verb == "get":
        verb = "watch" if _watch_param(query) else "list"
        selector = (query.get("fieldSelector") or [""])[0]
        exact = _exact_name(selector) if selector else None
        if exact and _valid_path_segment(exact):
            name = exact
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestInfo(True, path, verb, prefix, group, version, namespace, resource, subresource, name)


def rule_allows(rule: dict[str, Any], info: RequestInfo) -> bool:
    """rbac/v1 RuleAllows: does one PolicyRule allow the request?"""
    verbs = rule.get("verbs") or []
    if "*" not in verbs and info.verb not in verbs:
        return False
    if not info.is_resource_request:
        for url in rule.get("nonResourceURLs") or []:
            if url == "*" or url == info.path or (url.endswith("*") and info.path.startswith(url[:-1])):
                return True
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and info.api_group not in groups:
        return False
    combined = f"{info.resource}/{info.subresource}" if info.subresource else info.resource
    resources = rule.get("resources") or []
    if not any(r == "*" or r == combined or (info.subresource and r == f"*/{info.subresource}") for r in resources):
        return False
    names = rule.get("resourceNames") or []
    return not names or info.name in names


def allowed(rules: tuple[dict[str, Any], ...] | list[dict[str, Any]], info: RequestInfo) -> bool:
    """Whether any of ``rules`` or the discovery roles allows the request."""
    return any(rule_allows(r, info) for r in (*rules, *DISCOVERY_RULES))


def _go_quote(text: str) -> str:
    """Go's ``%q`` for the text of names and paths (a JSON string for printable text)."""
    return json.dumps(text, ensure_ascii=False)


def _sanitize(text: str) -> str:
    """responsewriters.sanitizer: HTML-escape &, < and >."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def forbidden_message(username: str, info: RequestInfo) -> str:
    """responsewriters.forbiddenMessage."""
    user = _go_quote(username)
    if not info.is_resource_request:
        return f"User {user} cannot {info.verb} path {_go_quote(info.path)}"
    resource = f"{info.resource}/{info.subresource}" if info.subresource else info.resource
    if info.namespace:
        return (f"User {user} cannot {info.verb} resource {_go_quote(resource)} in API group "
                f"{_go_quote(info.api_group)} in the namespace {_go_quote(info.namespace)}")
    return (f"User {user} cannot {info.verb} resource {_go_quote(resource)} in API group "
            f"{_go_quote(info.api_group)} at the cluster scope")


def forbidden(username: str, info: RequestInfo) -> dict[str, Any]:
    """The 403 Status the API server answers (responsewriters.Forbidden with no reason, as
    the RBAC authorizer gives none when no rule matches; apierrors.NewForbidden of the
    request's group and resource, without its subresource). Keys in the order Go writes them."""
    err = _sanitize(forbidden_message(username, info))
    resource = info.resource if info.is_resource_request else ""
    group = info.api_group if info.is_resource_request else ""
    name = info.name if info.is_resource_request else ""
    if not resource and not group:
        message = f"forbidden: {err}"
    else:
        qualified = f"{resource}.{group}" if group else resource
        message = f"{qualified} {_go_quote(name)} is forbidden: {err}" if name else f"{qualified} is forbidden: {err}"
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    if resource:
        details["kind"] = resource
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": "Forbidden", "details": details, "code": 403}


UNAUTHORIZED: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
"""What the API server answers a bearer token it cannot authenticate."""


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, None without one."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Authorizer:
    """The emulator's service-account tokens and their rules (thread-safe reads: a dict
    replaced, never mutated in place)."""

    def __init__(self) -> None:
        self._accounts: dict[str, ServiceAccount] = {}

    def add(self, token: str, rules: Any, namespace: str, name: str) -> ServiceAccount:
        if not token or token == ADMIN_TOKEN:
            raise ValueError(f"a service account token must be non-empty and not {ADMIN_TOKEN!r} (the admin token)")
        account = ServiceAccount(namespace, name, tuple(json.loads(json.dumps(list(rules)))))
        self._accounts = {**self._accounts, token: account}
        return account

    def remove(self, token: str) -> None:
        self._accounts = {k: v for k, v in self._accounts.items() if k != token}

    def check(self, authorization: str | None, method: str, path: str,
              query: dict[str, list[str]]) -> tuple[str | None, tuple[int, dict[str, Any]] | None]:
        """(the user, None) when the request may go on; (user, (status, Status body)) when it
        is refused: 401 for an unknown token, 403 when the account's rules do not allow it.
        The user is None for the admin (no token, or the placeholder token)."""
        token = bearer_token(authorization)
        if token is None or token == ADMIN_TOKEN:
            return None, None
        account = self._accounts.get(token)
        if account is None:
            return None, (401, dict(UNAUTHORIZED))
        info = request_info(method, path, query)
        if allowed(account.rules, info):
            return account.username, None
        return account.username, (403, forbidden(account.username, info))
