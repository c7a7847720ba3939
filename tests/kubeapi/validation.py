"""Object validation with the apiserver's rules and wording, for the mistakes products really make.

Invariant: ``validate`` only reports; it never changes the object. Causes use the same field paths
and messages as the real apiserver (``spec.template.spec.containers[0].image: Required value``), so
a manifest rejected here would be rejected by a cluster, and vice versa for the rules covered:
names, labels, pod templates (containers, images, ports, resources), workload selectors and their
immutability, Job restart policies, Services, ConfigMap/Secret keys and size, PVC immutability,
RoleBinding roleRef and CRD naming.
"""

from __future__ import annotations

import base64
import re
from decimal import Decimal
from typing import Any, Callable

from kubernetes.utils import parse_quantity

from tests.kubeapi.errors import (Cause, duplicate, forbidden, invalid, required, too_long,
                                  unsupported)
from tests.kubeapi.resources import ResourceType
from tests.kubeapi.selectors import selector_matches

JSONDict = dict[str, Any]

SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QNAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CONFIG_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")
SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
             "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
             "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
               "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
               "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
QNAME_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
             "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
             "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                   "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                   "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
CONFIG_KEY_MSG = ("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  "
                  "or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")
IMMUTABLE = "field is immutable"
MAX_CONFIG_BYTES = 1024 * 1024
MAX_ANNOTATION_BYTES = 256 * 1024
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
STS_MUTABLE = ("replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy",
               "minReadySeconds")


def dns_subdomain(path: str, value: str) -> list[Cause]:
    if len(value) > 253:
        return [invalid(path, value, "must be no more than 253 characters")]
    return [] if SUBDOMAIN_RE.match(value) else [invalid(path, value, SUBDOMAIN_MSG)]


def dns_label(path: str, value: str, rfc1035: bool = False) -> list[Cause]:
    if len(value) > 63:
        return [invalid(path, value, "must be no more than 63 characters")]
    regex, msg = (DNS1035_RE, DNS1035_MSG) if rfc1035 else (LABEL_RE, LABEL_MSG)
    return [] if regex.match(value) else [invalid(path, value, msg)]


def qualified_name(path: str, key: str) -> list[Cause]:
    prefix, _, name = key.rpartition("/")
    out = []
    if prefix:
        out += [invalid(path, key, "prefix part " + c.message.split(": ", 2)[-1]) for c in dns_subdomain(path, prefix)]
    if not name:
        out.append(invalid(path, key, "name part must be non-empty"))
    elif len(name) > 63:
        out.append(invalid(path, key, "name part must be no more than 63 characters"))
    elif not QNAME_RE.match(name):
        out.append(invalid(path, key, QNAME_MSG))
    return out


def _metadata(rt: ResourceType, meta: JSONDict) -> list[Cause]:
    out: list[Cause] = []
    name = meta.get("name") or ""
    if not name:
        out.append(required("metadata.name", "name or generateName is required"))
    elif rt.plural == "namespaces":
        out += dns_label("metadata.name", name)
    elif rt.plural == "services":
        out += dns_label("metadata.name", name, rfc1035=True)
    else:
        out += dns_subdomain("metadata.name", name)
    for key, value in (meta.get("labels") or {}).items():
        out += qualified_name("metadata.labels", key)
        if not isinstance(value, str) or len(value) > 63:
            out.append(invalid("metadata.labels", value, "must be no more than 63 characters"))
        elif not LABEL_VALUE_RE.match(value):
            out.append(invalid("metadata.labels", value, LABEL_VALUE_MSG))
    annotations = meta.get("annotations") or {}
    for key in annotations:
        out += qualified_name("metadata.annotations", key)
    if sum(len(k) + len(str(v)) for k, v in annotations.items()) > MAX_ANNOTATION_BYTES:
        out.append(too_long("metadata.annotations", MAX_ANNOTATION_BYTES))
    return out


def _quantity(path: str, value: Any) -> tuple[Decimal | None, list[Cause]]:
    try:
        return parse_quantity(value), []
    except (ValueError, TypeError):
        return None, [invalid(path, value, "must match the regex ^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")]


def _resources(path: str, res: JSONDict) -> list[Cause]:
    out: list[Cause] = []
    limits: dict[str, Decimal] = {}
    for name, value in (res.get("limits") or {}).items():
        q, errs = _quantity(f"{path}.limits[{name}]", value)
        out += errs
        if q is not None:
            limits[name] = q
    for name, value in (res.get("requests") or {}).items():
        q, errs = _quantity(f"{path}.requests[{name}]", value)
        out += errs
        if q is None:
            continue
        standard = name in STANDARD_RESOURCES or name.startswith("hugepages-")
        if not standard and name not in limits:
            out.append(required(f"{path}.limits", "Limit must be set for non overcommitable resources"))
        elif not standard and q != limits[name]:
            out.append(invalid(f"{path}.requests[{name}]", value, f"must be equal to {name} limit of {res['limits'][name]}"))
        elif name in limits and q > limits[name]:
            out.append(invalid(f"{path}.requests", value, f"must be less than or equal to {name} limit of {res['limits'][name]}"))
    return out


def _container(path: str, c: JSONDict) -> list[Cause]:
    out: list[Cause] = []
    if not c.get("name"):
        out.append(required(f"{path}.name"))
    else:
        out += dns_label(f"{path}.name", c["name"])
    if not c.get("image"):
        out.append(required(f"{path}.image"))
    for j, port in enumerate(c.get("ports") or []):
        pp = f"{path}.ports[{j}]"
        number = port.get("containerPort")
        if not isinstance(number, int) or not 0 < number < 65536:
            out.append(invalid(f"{pp}.containerPort", number, "must be between 1 and 65535, inclusive"))
        pname = port.get("name")
        if pname is not None and len(pname) > 15:
            out.append(invalid(f"{pp}.name", pname, "must be no more than 15 characters"))
        elif pname is not None and not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", pname):
            out.append(invalid(f"{pp}.name", pname, "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"))
    for j, env in enumerate(c.get("env") or []):
        if not env.get("name"):
            out.append(required(f"{path}.env[{j}].name"))
    return out + _resources(f"{path}.resources", c.get("resources") or {})


def pod_spec(path: str, spec: JSONDict | None, restart_policies: tuple[str, ...] | None = None) -> list[Cause]:
    """Validate a PodSpec found at ``path``."""
    spec = spec or {}
    out: list[Cause] = []
    containers = spec.get("containers") or []
    if not containers:
        out.append(required(f"{path}.containers"))
    seen: set[str] = set()
    for field in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(field) or []):
            out += _container(f"{path}.{field}[{i}]", c)
            if c.get("name") in seen:
                out.append(duplicate(f"{path}.{field}[{i}].name", c.get("name")))
            seen.add(c.get("name"))
    policy = spec.get("restartPolicy", "Always")
    allowed = list(restart_policies or ("Always", "OnFailure", "Never"))
    if policy not in allowed:
        out.append(unsupported(f"{path}.restartPolicy", policy, allowed))
    volumes = [v.get("name") for v in spec.get("volumes") or []]
    for i, name in enumerate(volumes):
        if name in volumes[:i]:
            out.append(duplicate(f"{path}.volumes[{i}].name", name))
    return out


def _template(path: str, template: JSONDict | None, selector: JSONDict | None, restart: tuple[str, ...] | None,
              check_selector: bool = True) -> list[Cause]:
    template = template or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    out: list[Cause] = []
    if check_selector:
        if not selector:
            out.append(required("spec.selector"))
        elif not (selector.get("matchLabels") or selector.get("matchExpressions")):
            out.append(invalid("spec.selector", selector, "empty selector is invalid for deployment"))
        elif not selector_matches(selector, labels):
            out.append(invalid(f"{path}.metadata.labels", labels, "`selector` does not match template `labels`"))
    return out + pod_spec(f"{path}.spec", template.get("spec"), restart)


def _immutable(path: str, new: Any, old: Any) -> list[Cause]:
    return [] if new == old else [invalid(path, new, IMMUTABLE)]


def _spec(obj: JSONDict) -> JSONDict:
    return obj.get("spec") or {}


def _workload(obj: JSONDict, old: JSONDict | None) -> list[Cause]:
    spec = _spec(obj)
    out = _template("spec.template", spec.get("template"), spec.get("selector"), ("Always",))
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or replicas < 0:
        out.append(invalid("spec.replicas", replicas, "must be greater than or equal to 0"))
    if old is not None:
        out += _immutable("spec.selector", spec.get("selector"), _spec(old).get("selector"))
    return out


def _statefulset(obj: JSONDict, old: JSONDict | None) -> list[Cause]:
    out = _workload(obj, old)
    if old is not None:
        frozen = {k: v for k, v in _spec(obj).items() if k not in STS_MUTABLE}
        was = {k: v for k, v in _spec(old).items() if k not in STS_MUTABLE}
        if frozen != was:
            out.append(forbidden("spec", "updates to statefulset spec for fields other than 'replicas', 'ordinals', "
                                 "'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and "
                                 "'minReadySeconds' are forbidden"))
    return out


def _job(obj: JSONDict, old: JSONDict | None) -> list[Cause]:
    spec = _spec(obj)
    out = _template("spec.template", spec.get("template"), spec.get("selector"), ("OnFailure", "Never"),
                    check_selector=bool(spec.get("manualSelector")))
    if old is not None:
        out += _immutable("spec.template", spec.get("template"), _spec(old).get("template"))
        out += _immutable("spec.selector", spec.get("selector"), _spec(old).get("selector"))
    return out


def _cronjob(obj: JSONDict, old: JSONDict | None) -> list[Cause]:
    spec = _spec(obj)
    out = [] if spec.get("schedule") else [required("spec.schedule")]
    job_spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return out + _template("spec.jobTemplate.spec.template", job_spec.get("template"), None,
                           ("OnFailure", "Never"), check_selector=False)


def _pod_mutable_view(pod: JSONDict) -> JSONDict:
    """The pod spec with the fields an update may change blanked out."""
    spec = {k: v for k, v in _spec(pod).items() if k not in ("activeDeadlineSeconds", "tolerations")}
    for field in ("containers", "initContainers"):
        spec[field] = [{k: v for k, v in c.items() if k != "image"} for c in spec.get(field) or []]
    return spec


def _pod(obj: JSONDict, old: JSONDict | None) -> list[Cause]:
    out = pod_spec("spec", obj.get("spec"))
    if old is not None and _pod_mutable_view(obj) != _pod_mutable_view(old):
        out.append(forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`, "
                             "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, "
                             "`spec.tolerations` (only additions to existing tolerations), "
                             "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"))
    return out


def _service(obj: JSONDict, old: JSONDict | None) -> list[Cause]:
    spec = _spec(obj)
    out: list[Cause] = []
    kind = spec.get("type", "ClusterIP")
    if kind not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        out.append(unsupported("spec.type", kind, ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]))
    ports = spec.get("ports") or []
    if not ports and kind != "ExternalName" and spec.get("clusterIP") != "None":
        out.append(required("spec.ports"))
    names = [p.get("name") for p in ports]
    for i, port in enumerate(ports):
        number = port.get("port")
        if not isinstance(number, int) or not 0 < number < 65536:
            out.append(invalid(f"spec.ports[{i}].port", number, "must be between 1 and 65535, inclusive"))
        if len(ports) > 1 and not port.get("name"):
            out.append(required(f"spec.ports[{i}].name"))
        elif port.get("name") and port["name"] in names[:i]:
            out.append(duplicate(f"spec.ports[{i}].name", port["name"]))
    if old is not None and _spec(old).get("clusterIP") and spec.get("clusterIP") != _spec(old).get("clusterIP"):
        out.append(invalid("spec.clusterIPs[0]", [spec.get("clusterIP")], "may not change once set"))
    return out


def _config(obj: JSONDict, old: JSONDict | None, secret: bool) -> list[Cause]:
    out: list[Cause] = []
    size = 0
    for field in ("data", "binaryData") if not secret else ("data",):
        for key, value in (obj.get(field) or {}).items():
            if not CONFIG_KEY_RE.match(key):
                out.append(invalid(f"{field}[{key}]", key, CONFIG_KEY_MSG))
            if secret or field == "binaryData":
                try:
                    size += len(base64.b64decode(value or "", validate=True))
                except (ValueError, TypeError):
                    out.append(invalid(f"{field}[{key}]", "<secret contents redacted>" if secret else key,
                                       "illegal base64 data"))
            else:
                size += len(key) + len(value or "")
    if size > MAX_CONFIG_BYTES:
        out.append(too_long("data" if secret else "[]", MAX_CONFIG_BYTES))
    if old is not None and old.get("immutable"):
        why = "field is immutable when `immutable` is set"
        for field in ("data", "binaryData", "immutable"):
            if obj.get(field) != old.get(field):
                out.append(forbidden(field, why))
    return out


def _pvc(obj: JSONDict, old: JSONDict | None) -> list[Cause]:
    spec = _spec(obj)
    out: list[Cause] = []
    if not spec.get("accessModes"):
        out.append(required("spec.accessModes"))
    if not ((spec.get("resources") or {}).get("requests") or {}).get("storage"):
        out.append(required("spec.resources[storage]"))
    if old is not None:
        mutable = ("resources", "volumeAttributesClassName", "volumeName")
        if {k: v for k, v in _spec(obj).items() if k not in mutable} != \
                {k: v for k, v in _spec(old).items() if k not in mutable}:
            out.append(forbidden("spec", "spec is immutable after creation except resources.requests and "
                                 "volumeAttributesClassName for bound claims"))
    return out


def _rolebinding(obj: JSONDict, old: JSONDict | None) -> list[Cause]:
    ref = obj.get("roleRef") or {}
    out = [] if ref.get("name") else [required("roleRef.name")]
    if old is not None and ref != old.get("roleRef"):
        out.append(invalid("roleRef", ref, "cannot change roleRef"))
    return out


def _crd(obj: JSONDict, old: JSONDict | None) -> list[Cause]:
    spec = _spec(obj)
    names = spec.get("names") or {}
    group = spec.get("group") or ""
    out: list[Cause] = []
    if not group:
        out.append(required("spec.group"))
    elif "." not in group:
        out.append(invalid("spec.group", group, "should be a domain with at least one dot"))
    for field in ("plural", "kind"):
        if not names.get(field):
            out.append(required(f"spec.names.{field}"))
    name = (obj.get("metadata") or {}).get("name")
    if names.get("plural") and group and name != f"{names['plural']}.{group}":
        out.append(invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        out.append(unsupported("spec.scope", spec.get("scope"), ["Cluster", "Namespaced"]))
    versions = spec.get("versions") or []
    if not versions:
        out.append(required("spec.versions", "must have exactly one version marked as storage version"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        out.append(invalid("spec.versions", [v.get("name") for v in versions],
                           "must have exactly one version marked as storage version"))
    for i, v in enumerate(versions):
        if not v.get("name"):
            out.append(required(f"spec.versions[{i}].name"))
    if old is not None:
        out += _immutable("spec.scope", spec.get("scope"), _spec(old).get("scope"))
    return out


Rule = Callable[[JSONDict, JSONDict | None], list[Cause]]
RULES: dict[tuple[str, str], Rule] = {
    ("apps", "deployments"): _workload,
    ("apps", "statefulsets"): _statefulset,
    ("apps", "daemonsets"): _workload,
    ("batch", "jobs"): _job,
    ("batch", "cronjobs"): _cronjob,
    ("", "pods"): _pod,
    ("", "services"): _service,
    ("", "configmaps"): lambda o, old: _config(o, old, secret=False),
    ("", "secrets"): lambda o, old: _config(o, old, secret=True),
    ("", "persistentvolumeclaims"): _pvc,
    ("rbac.authorization.k8s.io", "rolebindings"): _rolebinding,
    ("rbac.authorization.k8s.io", "clusterrolebindings"): _rolebinding,
    ("apiextensions.k8s.io", "customresourcedefinitions"): _crd,
}


def validate(rt: ResourceType, obj: JSONDict, old: JSONDict | None) -> list[Cause]:
    """All validation failures of ``obj`` (``old`` is the live object on update, else None)."""
    out = _metadata(rt, obj.get("metadata") or {})
    rule = RULES.get(rt.key)
    if rule is not None:
        out += rule(obj, old)
    return out

