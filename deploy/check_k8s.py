#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests in deploy/k8s (no cluster needed).

Run: python3 deploy/check_k8s.py   (scripts/check-deploy installs deploy/requirements.txt
first). Exit status 0 when everything passes; otherwise each problem is printed with the
overlay, object and field it concerns, and the status is 1.

(a) Listing. Every kustomization lists only files and directories that exist, and every file
    under deploy/k8s (YAML, the dashboard JSON, the SQL) is used by some kustomization: no
    orphans. Every component and the base are used by an overlay.
(b) Rendering. Each overlay is built by a small kustomize implementation in this file
    (resources, components, configMapGenerator without name hashes, JSON 6902 patches,
    map-only strategic-merge patches, images, labels); anything else in a kustomization is an
    error. When `kubectl` with kustomize v5 is on PATH, the overlay is also built with
    `kubectl kustomize` and the two renders must be equal object for object; kubectl's render
    is then the one checked. (Debian's kubernetes-client package is 1.20, too old for this.)
    CROFT_CHECK_NO_KUBECTL=1 skips kubectl.
(c) Schemas. Every object of a built-in kind is validated with kubernetes-validate against the
    strict JSON schemas of Kubernetes 1.30 (K8S_VERSION), as are the pod templates embedded in
    Agones Fleets (validated as a v1 Pod).
(d) Custom resources. The CRDs' schemas are not vendored here, so Agones (Fleet,
    FleetAutoscaler), Strimzi (Kafka, KafkaNodePool, KafkaTopic), CloudNativePG (Cluster) and
    Prometheus Operator (ServiceMonitor, PodMonitor, PrometheusRule) objects get small
    hand-written checks of apiVersion, kind, required fields, enumerations and the references
    between them (check_crd_* below). Any other kind is an error.
(e) Workloads. Every container of every pod template (Deployments, StatefulSets, Jobs, Agones
    Fleets) runs as non-root with seccomp RuntimeDefault, no privilege escalation, a read-only
    root filesystem (writable paths are size-limited emptyDirs) and all capabilities dropped;
    has CPU and memory requests and limits; long-running ones have startup/liveness probes on
    /healthz and readiness probes on /readyz on a declared port; images carry a tag; API
    tokens are mounted only where a RoleBinding grants the ServiceAccount something.
Cross-checks with the rest of the repository:
  * every CROFT_* variable a container sets is accepted by that binary's clap config in the
    Rust sources, or listed as pending in deploy/rust-pending.yaml (and no pending entry exists
    in the sources yet); the listen addresses bind 0.0.0.0 on the ports probes and Services use;
  * every metric in the alerts, the dashboard and the HPA is exported by the Rust code
    (counter!/gauge!/histogram!, process_* from telemetry) or pending;
  * Secrets referenced are the documented external ones (named in deploy/README.md) or
    operator-made; ConfigMaps and keys referenced exist in the render;
  * Services, NetworkPolicies, PDBs, HPAs, monitors select pods that exist and name ports
    those pods declare; in-cluster URLs name Services and ports that exist;
  * exposure: only the auth edge (TCP) and the connection/instance netcode sockets (UDP) are
    reachable from outside; every namespace denies ingress by default; only labelled
    services reach Postgres and Kafka;
  * the connection servers' replicas, per-pod Services, public IPs and the address list auth
    puts in connect tokens agree; KafkaTopics equal docs/events/*.schema.json; image names are
    Dockerfile targets; instance drain fits the termination grace period.
"""

from __future__ import annotations

import copy
import glob
import ipaddress
import json
import math
import os
import re
import shutil
import subprocess
import sys
from typing import Any, Iterable

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("check_k8s.py needs PyYAML: pip install --require-hashes -r deploy/requirements.txt")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
K8S = os.path.join(DEPLOY, "k8s")
K8S_VERSION = "1.30.0"
OVERLAYS = ["overlays/dev", "overlays/prod"]
NAMESPACES = {"croft", "croft-games"}

BUILTIN_GROUPS = {
    "", "apps", "batch", "policy", "autoscaling", "networking.k8s.io",
    "rbac.authorization.k8s.io", "coordination.k8s.io", "scheduling.k8s.io", "storage.k8s.io",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}

# Secrets the manifests expect to exist; nothing in the repository creates them (see
# deploy/README.md, "Secrets"): namespace -> secret -> keys used.
EXTERNAL_SECRETS = {
    "croft": {
        "croft-jwt": {"jwt.key"},
        "croft-netcode": {"netcode.key"},
        "croft-service-token": {"token"},
        "croft-control-token": {"token"},
        "croft-db-app-url": {"url"},
        "croft-db-migrator-url": {"url"},
        "croft-db-app": {"username", "password"},
        "croft-db-migrator": {"username", "password"},
        "croft-auth-tls": {"tls.crt", "tls.key"},
    },
    "croft-games": {
        "croft-netcode": {"netcode.key"},
        "croft-control-token": {"token"},
        # Farms: the services' database URL and a copy of the database CA (croft/croft-db-ca).
        "croft-db-app-url": {"url"},
        "croft-db-ca": {"ca.crt"},
    },
}
# Secrets an operator creates: namespace -> secret -> keys.
OPERATOR_SECRETS = {"croft": {"croft-db-ca": {"ca.crt"}}}
# Pod labels set by operators on pods this render does not contain.
OPERATOR_POD_LABELS = {"cnpg.io/cluster", "strimzi.io/cluster", "strimzi.io/name", "agones.dev/fleet"}
# Namespaces outside croft that policies may name (and whose pods are not checked).
EXTERNAL_NAMESPACES = {"kube-system", "monitoring", "cnpg-system", "ingress-nginx"}
# Environment variables containers may set besides the binaries' CROFT_* flags.
EXTRA_ENV = {"RUST_LOG", "PGSSLMODE", "PGSSLROOTCERT"}
# Metrics not exported by croft that queries may use.
EXTERNAL_METRICS = {"up"}

# Which Rust config a container runs, by image and first argument.
BINARIES = {
    ("croft", "auth"): ("auth", "services/auth/src/server.rs", "AuthConfig"),
    ("croft", "matchmaking"): ("matchmaking", "services/matchmaking/src/server.rs", "MatchmakingConfig"),
    ("croft", "migrate"): ("migrate", "libs/store/src/lib.rs", "DatabaseArgs"),
    ("server-connection", None): ("connection", "server-connection/src/config.rs", "ConnectionConfig"),
    ("server-instance", None): ("instance", "server-instance/src/config.rs", "InstanceConfig"),
}
# The env var holding the address that serves /healthz, /readyz and /metrics, per binary.
TELEMETRY_ADDR = {
    "auth": "CROFT_AUTH_METRICS",
    "matchmaking": "CROFT_MATCHMAKING_HTTP",
    "connection": "CROFT_CONNECTION_HTTP",
    "instance": "CROFT_INSTANCE_HTTP",
}
MAX_CLIENTS_PER_SOCKET = 1024


# =============================================================================================
# Problems
# =============================================================================================

class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.context = ""

    def add(self, msg: str) -> None:
        self.items.append(f"[{self.context}] {msg}" if self.context else msg)


P = Problems()


def oid(o: dict) -> str:
    md = o.get("metadata") or {}
    ns = md.get("namespace")
    return f"{o.get('kind')}/{(ns + '/') if ns else ''}{md.get('name')}"


def rel(path: str) -> str:
    return os.path.relpath(path, ROOT)


# =============================================================================================
# Loading
# =============================================================================================

def load_docs(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        try:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            P.add(f"{rel(path)}: YAML error: {e}")
            return []
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            P.add(f"{rel(path)}: a document without apiVersion/kind")
    return [d for d in docs if isinstance(d, dict)]


def kustomization_file(d: str) -> str | None:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        p = os.path.join(d, name)
        if os.path.isfile(p):
            return p
    return None


KUSTOMIZATION_KEYS = {
    "apiVersion", "kind", "resources", "components", "configMapGenerator", "patches",
    "images", "labels",
}


def read_kustomization(d: str) -> dict:
    path = kustomization_file(d)
    if path is None:
        raise RenderError(f"{rel(d)}: no kustomization.yaml")
    with open(path, encoding="utf-8") as f:
        k = yaml.safe_load(f) or {}
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        raise RenderError(
            f"{rel(path)}: {sorted(unknown)} not supported by the offline renderer "
            f"(supported: {sorted(KUSTOMIZATION_KEYS)})"
        )
    return k


# =============================================================================================
# (a) Listing
# =============================================================================================

def check_listing() -> None:
    P.context = "listing"
    referenced: set[str] = set()
    kdirs = sorted({os.path.dirname(p) for p in glob.glob(os.path.join(K8S, "**", "kustomization.yaml"), recursive=True)})
    used_kdirs: set[str] = set()
    for d in kdirs:
        try:
            k = read_kustomization(d)
        except RenderError as e:
            P.add(str(e))
            continue
        kpath = kustomization_file(d)
        referenced.add(os.path.abspath(kpath))
        expect_kind = "Component" if k.get("kind") == "Component" else "Kustomization"
        want_api = "kustomize.config.k8s.io/v1alpha1" if expect_kind == "Component" else "kustomize.config.k8s.io/v1beta1"
        if k.get("apiVersion") != want_api:
            P.add(f"{rel(kpath)}: apiVersion {k.get('apiVersion')!r}, expected {want_api}")
        for r in k.get("resources", []) or []:
            p = os.path.normpath(os.path.join(d, r))
            if os.path.isdir(p):
                if not kustomization_file(p):
                    P.add(f"{rel(kpath)}: resource {r} is a directory without kustomization.yaml")
                else:
                    used_kdirs.add(p)
                    if read_kustomization(p).get("kind") == "Component":
                        P.add(f"{rel(kpath)}: {r} is a Component; list it under components:")
            elif os.path.isfile(p):
                referenced.add(os.path.abspath(p))
            else:
                P.add(f"{rel(kpath)}: resource {r} does not exist")
        for c in k.get("components", []) or []:
            p = os.path.normpath(os.path.join(d, c))
            if not (os.path.isdir(p) and kustomization_file(p)):
                P.add(f"{rel(kpath)}: component {c} does not exist")
                continue
            used_kdirs.add(p)
            if read_kustomization(p).get("kind") != "Component":
                P.add(f"{rel(kpath)}: component {c} is not kind: Component")
        for g in k.get("configMapGenerator", []) or []:
            for f in g.get("files", []) or []:
                src = f.split("=", 1)[1] if "=" in f else f
                p = os.path.normpath(os.path.join(d, src))
                if not os.path.isfile(p):
                    P.add(f"{rel(kpath)}: configMapGenerator {g.get('name')}: file {src} does not exist")
                referenced.add(os.path.abspath(p))
        for patch in k.get("patches", []) or []:
            if "path" in patch:
                p = os.path.normpath(os.path.join(d, patch["path"]))
                if not os.path.isfile(p):
                    P.add(f"{rel(kpath)}: patch {patch['path']} does not exist")
                referenced.add(os.path.abspath(p))
    for f in glob.glob(os.path.join(K8S, "**", "*"), recursive=True):
        if os.path.isdir(f) or os.path.basename(f) == "README.md":
            continue
        if os.path.abspath(f) not in referenced:
            P.add(f"{rel(f)} is not listed by any kustomization (orphan)")
    for d in kdirs:
        is_overlay = os.path.relpath(d, K8S).startswith("overlays" + os.sep)
        if not is_overlay and d not in used_kdirs:
            P.add(f"{rel(d)} is not used by any overlay")
    for o in OVERLAYS:
        if not kustomization_file(os.path.join(K8S, o)):
            P.add(f"overlay {o} has no kustomization.yaml")


# =============================================================================================
# (b) Rendering
# =============================================================================================

class RenderError(Exception):
    pass


def split_api(api: str) -> tuple[str, str]:
    return tuple(api.split("/", 1)) if "/" in api else ("", api)  # type: ignore[return-value]


def target_matches(target: dict, o: dict) -> bool:
    unsupported = set(target) - {"group", "version", "kind", "name", "namespace"}
    if unsupported:
        raise RenderError(f"patch target keys {sorted(unsupported)} not supported")
    group, version = split_api(o.get("apiVersion", ""))
    md = o.get("metadata", {})
    checks = [("group", group), ("version", version), ("kind", o.get("kind")),
              ("name", md.get("name")), ("namespace", md.get("namespace"))]
    for key, value in checks:
        if key in target and not re.fullmatch(str(target[key]), str(value or "")):
            return False
    return True


def json_pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise RenderError(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    cur = doc
    for p in parts:
        if isinstance(cur, list):
            cur = cur[int(p)]
        elif isinstance(cur, dict):
            cur = cur[p]
        else:
            raise KeyError(p)
    return cur


def apply_json6902(doc: dict, ops: list[dict], where: str) -> None:
    for op in ops:
        kind = op.get("op")
        try:
            parts = json_pointer(op["path"])
            parent = _walk(doc, parts[:-1]) if parts else None
            last = parts[-1] if parts else None
            if kind == "test":
                if _walk(doc, parts) != op.get("value"):
                    raise RenderError(f"{where}: test failed at {op['path']}: {_walk(doc, parts)!r} != {op.get('value')!r}")
            elif kind in ("add", "replace"):
                value = copy.deepcopy(op["value"])
                if isinstance(parent, list):
                    if last == "-":
                        if kind == "replace":
                            raise RenderError(f"{where}: replace at {op['path']}")
                        parent.append(value)
                    else:
                        i = int(last)
                        if kind == "add":
                            parent.insert(i, value)
                        else:
                            parent[i] = value
                elif isinstance(parent, dict):
                    if kind == "replace" and last not in parent:
                        raise RenderError(f"{where}: replace of missing {op['path']}")
                    parent[last] = value
                else:
                    raise RenderError(f"{where}: cannot {kind} at {op['path']}")
            elif kind == "remove":
                if isinstance(parent, list):
                    del parent[int(last)]
                else:
                    del parent[last]
            elif kind in ("copy", "move"):
                src = json_pointer(op["from"])
                value = copy.deepcopy(_walk(doc, src))
                if kind == "move":
                    sp = _walk(doc, src[:-1])
                    del sp[int(src[-1]) if isinstance(sp, list) else src[-1]]
                apply_json6902(doc, [{"op": "add", "path": op["path"], "value": value}], where)
            else:
                raise RenderError(f"{where}: unknown op {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise RenderError(f"{where}: {kind} {op.get('path')}: path not found ({e})") from None


def strategic_merge(base: dict, patch: dict, where: str) -> dict:
    """Map-only strategic merge: nested maps merge, null deletes. Lists are refused (kustomize
    merges them by per-field keys that this renderer does not know): use a JSON 6902 patch."""
    out = dict(base)
    for k, v in patch.items():
        if isinstance(v, list):
            raise RenderError(f"{where}: list at {k!r} in a strategic-merge patch; use a JSON 6902 patch")
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = strategic_merge(out[k], v, where)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_patches(objs: list[dict], patches: list[dict], d: str) -> None:
    for n, patch in enumerate(patches):
        where = f"{rel(d)} patch #{n + 1}"
        if "path" in patch:
            text = open(os.path.join(d, patch["path"]), encoding="utf-8").read()
            where += f" ({patch['path']})"
        elif "patch" in patch:
            text = patch["patch"]
        else:
            raise RenderError(f"{where}: neither path nor patch")
        body = yaml.safe_load(text)
        target = patch.get("target")
        if isinstance(body, list):
            if not target:
                raise RenderError(f"{where}: a JSON 6902 patch needs a target")
            hits = [o for o in objs if target_matches(target, o)]
            if not hits:
                raise RenderError(f"{where}: target {target} matches nothing")
            for o in hits:
                apply_json6902(o, body, f"{where} on {oid(o)}")
        elif isinstance(body, dict):
            if not target:
                md = body.get("metadata", {})
                target = {"kind": body.get("kind"), "name": md.get("name")}
                if md.get("namespace"):
                    target["namespace"] = md["namespace"]
            hits = [o for o in objs if target_matches(target, o)]
            if not hits:
                raise RenderError(f"{where}: target {target} matches nothing")
            for o in hits:
                merged = strategic_merge(o, body, f"{where} on {oid(o)}")
                o.clear()
                o.update(merged)
        else:
            raise RenderError(f"{where}: empty patch")


def parse_image(ref: str) -> tuple[str, str | None, str | None]:
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    tag = None
    if ":" in ref.rsplit("/", 1)[-1]:
        ref, tag = ref.rsplit(":", 1)
    return ref, tag, digest


def apply_images(objs: list[dict], images: list[dict]) -> None:
    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("containers", "initContainers") and isinstance(v, list):
                    for c in v:
                        if isinstance(c, dict) and isinstance(c.get("image"), str):
                            c["image"] = retag(c["image"])
                visit(v)
        elif isinstance(node, list):
            for v in node:
                visit(v)

    def retag(ref: str) -> str:
        name, tag, digest = parse_image(ref)
        for img in images:
            if img.get("name") != name:
                continue
            unsupported = set(img) - {"name", "newName", "newTag", "digest"}
            if unsupported:
                raise RenderError(f"images: {sorted(unsupported)} not supported")
            name = img.get("newName", name)
            if "digest" in img:
                return f"{name}@{img['digest']}"
            if "newTag" in img:
                tag = str(img["newTag"])
            return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
        return ref

    for o in objs:
        visit(o)


def apply_labels(objs: list[dict], labels: list[dict]) -> None:
    for entry in labels:
        unsupported = {k for k, v in entry.items() if k != "pairs" and v}
        if unsupported:
            raise RenderError(f"labels: {sorted(unsupported)} not supported (metadata labels only)")
        for o in objs:
            md = o.setdefault("metadata", {})
            md.setdefault("labels", {})
            md["labels"].update({k: str(v) for k, v in (entry.get("pairs") or {}).items()})


def generate_configmaps(gens: list[dict], d: str) -> list[dict]:
    out = []
    for g in gens:
        unsupported = set(g) - {"name", "namespace", "files", "literals", "options"}
        if unsupported:
            raise RenderError(f"{rel(d)}: configMapGenerator {sorted(unsupported)} not supported")
        opts = g.get("options") or {}
        if not opts.get("disableNameSuffixHash"):
            raise RenderError(f"{rel(d)}: configMapGenerator {g.get('name')}: set options.disableNameSuffixHash "
                              "(the offline renderer does not compute kustomize's name hashes)")
        data = {}
        for f in g.get("files", []) or []:
            key, src = f.split("=", 1) if "=" in f else (os.path.basename(f), f)
            data[key] = open(os.path.join(d, src), encoding="utf-8").read()
        for lit in g.get("literals", []) or []:
            k, v = lit.split("=", 1)
            data[k] = v
        md: dict = {"name": g["name"]}
        if g.get("namespace"):
            md["namespace"] = g["namespace"]
        if opts.get("labels"):
            md["labels"] = {k: str(v) for k, v in opts["labels"].items()}
        if opts.get("annotations"):
            md["annotations"] = {k: str(v) for k, v in opts["annotations"].items()}
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": data})
    return out


def build(d: str, component: bool = False, into: list[dict] | None = None) -> list[dict]:
    """Kustomize's order: resources, then components (their resources and generators added,
    then their patches applied to everything so far), then this kustomization's generators
    and transformers (patches, images, labels)."""
    k = read_kustomization(d)
    if (k.get("kind") == "Component") != component:
        raise RenderError(f"{rel(d)}: kind {k.get('kind', 'Kustomization')} used as "
                          f"{'component' if component else 'resource'}")
    objs: list[dict] = into if into is not None else []
    for r in k.get("resources", []) or []:
        p = os.path.normpath(os.path.join(d, r))
        if os.path.isdir(p):
            objs.extend(build(p))
        else:
            objs.extend(copy.deepcopy(load_docs(p)))
    for c in k.get("components", []) or []:
        build(os.path.normpath(os.path.join(d, c)), component=True, into=objs)
    objs.extend(generate_configmaps(k.get("configMapGenerator", []) or [], d))
    apply_patches(objs, k.get("patches", []) or [], d)
    apply_images(objs, k.get("images", []) or [])
    apply_labels(objs, k.get("labels", []) or [])
    seen = set()
    for o in objs:
        key = (o.get("apiVersion"), o.get("kind"), o["metadata"].get("namespace"), o["metadata"].get("name"))
        if key in seen:
            raise RenderError(f"{rel(d)}: {oid(o)} defined twice")
        seen.add(key)
    return objs


def kubectl_kustomize_available() -> bool:
    if os.environ.get("CROFT_CHECK_NO_KUBECTL"):
        return False  # exercise the built-in renderer alone
    exe = shutil.which("kubectl")
    if not exe:
        return False
    try:
        out = subprocess.run([exe, "version", "--client", "-o", "json"], capture_output=True,
                             text=True, timeout=60).stdout
        v = json.loads(out).get("kustomizeVersion", "")
        return bool(re.match(r"v([5-9]|\d\d)\.", v))
    except (OSError, ValueError, subprocess.SubprocessError):
        return False


def kubectl_build(d: str) -> list[dict]:
    r = subprocess.run(["kubectl", "kustomize", d], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RenderError(f"kubectl kustomize {rel(d)} failed: {r.stderr.strip()}")
    return [o for o in yaml.safe_load_all(r.stdout) if o]


def key_of(o: dict) -> tuple:
    md = o.get("metadata", {})
    return (o.get("apiVersion"), o.get("kind"), md.get("namespace"), md.get("name"))


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'kubectl' if k in b else 'python'}")
            else:
                out += diff(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [x for i in range(len(a)) for x in diff(a[i], b[i], f"{path}/{i}")]
    return [] if a == b else [f"{path}: python {a!r} vs kubectl {b!r}"[:300]]


# =============================================================================================
# Helpers over rendered objects
# =============================================================================================

def pod_templates(objs: list[dict]) -> list[tuple[dict, dict, str]]:
    """(owner, pod template, category): category is 'service', 'job' or 'agones'."""
    out = []
    for o in objs:
        kind = o.get("kind")
        spec = o.get("spec") or {}
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
            out.append((o, spec.get("template") or {}, "service"))
        elif kind == "Job":
            out.append((o, spec.get("template") or {}, "job"))
        elif kind == "CronJob":
            out.append((o, ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}, "job"))
        elif kind in ("Fleet", "GameServerSet"):
            out.append((o, ((spec.get("template") or {}).get("spec") or {}).get("template") or {}, "agones"))
        elif kind == "GameServer":
            out.append((o, spec.get("template") or {}, "agones"))
    return out


def ns_of(o: dict) -> str | None:
    return (o.get("metadata") or {}).get("namespace")


def labels_match(selector: dict | None, labels: dict) -> bool:
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def selector_keys(selector: dict | None) -> set[str]:
    selector = selector or {}
    return set((selector.get("matchLabels") or {})) | {e.get("key") for e in selector.get("matchExpressions") or []}


def pods_in(objs: list[dict], ns: str) -> list[tuple[dict, dict, str]]:
    return [(o, t, c) for o, t, c in pod_templates(objs) if ns_of(o) == ns]


def container_ports(tpl: dict, owner: dict | None = None) -> list[dict]:
    ports = []
    for c in (tpl.get("spec") or {}).get("containers") or []:
        ports += c.get("ports") or []
    if owner is not None and owner.get("kind") in ("Fleet", "GameServer", "GameServerSet"):
        gs = (owner["spec"]["template"]["spec"] if owner["kind"] != "GameServer" else owner["spec"])
        for p in gs.get("ports") or []:
            ports.append({"name": p.get("name"), "containerPort": p.get("containerPort"),
                          "protocol": "UDP" if p.get("protocol", "UDP") == "UDP" else "TCP"})
    return ports


def env_map(c: dict) -> dict[str, str]:
    out = {}
    for e in c.get("env") or []:
        if "value" in e:
            out[e["name"]] = str(e["value"])
        else:
            out[e["name"]] = "<valueFrom>"
    return out


def binary_of(c: dict) -> str | None:
    name, _, _ = parse_image(c.get("image", ""))
    base = name.rsplit("/", 1)[-1]
    args = c.get("args") or []
    for (img, sub), (binary, _, _) in BINARIES.items():
        if base == img and (sub is None or (args and args[0] == sub)):
            return binary
    return None


def quantity(q: Any) -> float:
    s = str(q)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "m": 1e-3}
    for u, f in units.items():
        if s.endswith(u):
            return float(s[: -len(u)]) * f
    return float(s)


def find(objs: list[dict], kind: str, name: str, ns: str | None = None) -> dict | None:
    for o in objs:
        if o.get("kind") == kind and o["metadata"].get("name") == name and (ns is None or ns_of(o) == ns):
            return o
    return None


# =============================================================================================
# (c) Built-in kinds against the Kubernetes schemas
# =============================================================================================

def check_schemas(objs: list[dict]) -> int:
    try:
        import kubernetes_validate
        from kubernetes_validate.utils import SchemaNotFoundError, ValidationError
    except ImportError:
        P.add("kubernetes-validate is not installed: pip install --require-hashes -r deploy/requirements.txt")
        return 0
    count = 0

    def validate(doc: dict, what: str) -> None:
        nonlocal count
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            count += 1
        except ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            P.add(f"{what}: schema (Kubernetes {K8S_VERSION}): {path}: {e.message}")
        except SchemaNotFoundError as e:
            P.add(f"{what}: {e.message}")

    for o in objs:
        group, _ = split_api(o.get("apiVersion", ""))
        if group in BUILTIN_GROUPS:
            validate(o, oid(o))
    for owner, tpl, cat in pod_templates(objs):
        if cat == "agones":
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": dict(tpl.get("metadata") or {}, name="template"),
                   "spec": tpl.get("spec") or {}}
            validate(pod, f"{oid(owner)} pod template")
    return count


# =============================================================================================
# (d) Custom resources: hand-written checks (the CRDs' own schemas are not vendored)
# =============================================================================================

def need(o: dict, path: str, types: type | tuple = object) -> Any:
    cur: Any = o
    for p in path.split("."):
        if not isinstance(cur, dict) or p not in cur:
            P.add(f"{oid(o)}: missing {path}")
            return None
        cur = cur[p]
    if not isinstance(cur, types):
        P.add(f"{oid(o)}: {path} should be {types}, is {type(cur).__name__}")
        return None
    return cur


def one_of(o: dict, path: str, value: Any, allowed: Iterable) -> None:
    if value not in allowed:
        P.add(f"{oid(o)}: {path} {value!r} not one of {sorted(allowed)}")


def check_crd_fleet(o: dict, objs: list[dict]) -> None:
    """agones.dev/v1 Fleet: GameServer template with ports, counters, priorities."""
    spec = need(o, "spec", dict) or {}
    if "replicas" in spec and not isinstance(spec["replicas"], int):
        P.add(f"{oid(o)}: spec.replicas must be an integer")
    one_of(o, "spec.scheduling", spec.get("scheduling", "Packed"), {"Packed", "Distributed"})
    one_of(o, "spec.strategy.type", (spec.get("strategy") or {}).get("type", "RollingUpdate"), {"RollingUpdate", "Recreate"})
    gs = need(o, "spec.template.spec", dict) or {}
    pod = (gs.get("template") or {}).get("spec") or {}
    containers = [c.get("name") for c in pod.get("containers") or []]
    if not containers:
        P.add(f"{oid(o)}: spec.template.spec.template.spec.containers is empty")
    if len(containers) > 1 and gs.get("container") not in containers:
        P.add(f"{oid(o)}: spec.template.spec.container must name one of {containers}")
    if gs.get("container") and gs["container"] not in containers:
        P.add(f"{oid(o)}: spec.template.spec.container {gs['container']!r} is not a container")
    for p in gs.get("ports") or []:
        if not p.get("name") or not isinstance(p.get("containerPort"), int) and p.get("portPolicy") != "Passthrough":
            P.add(f"{oid(o)}: every GameServer port needs name and containerPort: {p}")
        one_of(o, "ports[].portPolicy", p.get("portPolicy", "Dynamic"), {"Dynamic", "Static", "Passthrough", "None"})
        one_of(o, "ports[].protocol", p.get("protocol", "UDP"), {"UDP", "TCP", "TCPUDP"})
        if p.get("portPolicy") == "Static" and not p.get("hostPort"):
            P.add(f"{oid(o)}: port {p.get('name')}: Static needs hostPort")
        if p.get("container") and p["container"] not in containers:
            P.add(f"{oid(o)}: port {p.get('name')}: container {p['container']!r} does not exist")
    counters = gs.get("counters") or {}
    for key, c in counters.items():
        if not isinstance(c, dict) or not isinstance(c.get("capacity"), int) or not isinstance(c.get("count", 0), int):
            P.add(f"{oid(o)}: counter {key}: count and capacity must be integers")
        elif c.get("count", 0) > c["capacity"]:
            P.add(f"{oid(o)}: counter {key}: count above capacity")
    lists = gs.get("lists") or {}
    for pr in spec.get("priorities") or []:
        one_of(o, "spec.priorities[].type", pr.get("type"), {"Counter", "List"})
        one_of(o, "spec.priorities[].order", pr.get("order", "Ascending"), {"Ascending", "Descending"})
        pool = counters if pr.get("type") == "Counter" else lists
        if pr.get("key") not in pool:
            P.add(f"{oid(o)}: priority on {pr.get('type')} {pr.get('key')!r}, which the GameServer template does not declare")
    if "eviction" in gs:
        one_of(o, "eviction.safe", (gs["eviction"] or {}).get("safe"), {"Always", "OnUpgrade", "Never"})
    health = gs.get("health") or {}
    for k in ("initialDelaySeconds", "periodSeconds", "failureThreshold"):
        if k in health and not (isinstance(health[k], int) and health[k] >= 0):
            P.add(f"{oid(o)}: health.{k} must be a non-negative integer")
    if "serviceAccountName" in pod or pod.get("automountServiceAccountToken") is True:
        P.add(f"{oid(o)}: leave serviceAccountName/automountServiceAccountToken to Agones (the SDK sidecar gets the token)")


def check_crd_fleetautoscaler(o: dict, objs: list[dict]) -> None:
    """autoscaling.agones.dev/v1 FleetAutoscaler: policy against the Fleet it names."""
    fleet_name = need(o, "spec.fleetName", str)
    fleet = find(objs, "Fleet", fleet_name or "", ns_of(o))
    if fleet_name and not fleet:
        P.add(f"{oid(o)}: fleetName {fleet_name!r}: no such Fleet in {ns_of(o)}")
    policy = need(o, "spec.policy", dict) or {}
    ptype = policy.get("type")
    one_of(o, "spec.policy.type", ptype, {"Buffer", "Webhook", "Counter", "List", "Schedule", "Chain", "Wasm"})
    if ptype in ("Counter", "List"):
        body = policy.get(ptype.lower()) or {}
        key = body.get("key")
        if fleet:
            declared = (fleet["spec"]["template"]["spec"].get("counters" if ptype == "Counter" else "lists") or {})
            if key not in declared:
                P.add(f"{oid(o)}: {ptype} key {key!r} is not declared by Fleet {fleet_name}")
        buf = body.get("bufferSize")
        maxc = body.get("maxCapacity")
        minc = body.get("minCapacity", 0)
        if buf is None or maxc is None:
            P.add(f"{oid(o)}: {ptype.lower()}.bufferSize and maxCapacity are required")
        else:
            pct = isinstance(buf, str) and buf.endswith("%")
            if pct and not minc:
                P.add(f"{oid(o)}: a percentage bufferSize needs minCapacity")
            if not pct and (not isinstance(buf, int) or buf <= 0):
                P.add(f"{oid(o)}: bufferSize must be a positive integer or a percentage")
            if not isinstance(maxc, int) or (isinstance(buf, int) and maxc < buf) or (minc and maxc < minc):
                P.add(f"{oid(o)}: maxCapacity must be >= bufferSize and minCapacity")
            if minc and isinstance(buf, int) and minc < buf:
                P.add(f"{oid(o)}: minCapacity must be >= bufferSize")
    elif ptype == "Buffer":
        b = policy.get("buffer") or {}
        if "bufferSize" not in b or "maxReplicas" not in b:
            P.add(f"{oid(o)}: buffer.bufferSize and buffer.maxReplicas are required")
    sync = (o["spec"].get("sync") or {})
    if sync:
        one_of(o, "spec.sync.type", sync.get("type"), {"FixedInterval"})
        secs = (sync.get("fixedInterval") or {}).get("seconds")
        if not (isinstance(secs, int) and secs > 0):
            P.add(f"{oid(o)}: sync.fixedInterval.seconds must be a positive integer")


def kafka_pools(objs: list[dict], kafka: dict) -> list[dict]:
    return [p for p in objs if p.get("kind") == "KafkaNodePool" and ns_of(p) == ns_of(kafka)
            and (p["metadata"].get("labels") or {}).get("strimzi.io/cluster") == kafka["metadata"]["name"]]


def check_crd_kafka(o: dict, objs: list[dict]) -> None:
    """kafka.strimzi.io/v1beta2 Kafka (KRaft with node pools): listeners, pools, replication."""
    listeners = need(o, "spec.kafka.listeners", list) or []
    if not listeners:
        P.add(f"{oid(o)}: spec.kafka.listeners is empty")
    names = set()
    for li in listeners:
        name, port = li.get("name"), li.get("port")
        if not re.fullmatch(r"[a-z0-9]{1,11}", str(name)) or name in names:
            P.add(f"{oid(o)}: listener name {name!r} must be unique, lower-case alphanumeric, <= 11 chars")
        names.add(name)
        if not isinstance(port, int) or port < 9092 or port in (9090, 9091):
            P.add(f"{oid(o)}: listener {name}: port {port} (must be >= 9092, not 9090/9091)")
        one_of(o, f"listener {name} type", li.get("type"), {"internal", "cluster-ip", "route", "loadbalancer", "nodeport", "ingress"})
        if not isinstance(li.get("tls"), bool):
            P.add(f"{oid(o)}: listener {name}: tls must be true or false")
    version = (o["spec"].get("kafka") or {}).get("version")
    if version is not None and not re.fullmatch(r"\d+\.\d+\.\d+", str(version)):
        P.add(f"{oid(o)}: spec.kafka.version {version!r} is not x.y.z")
    pools = kafka_pools(objs, o)
    if not pools:
        P.add(f"{oid(o)}: no KafkaNodePool labelled strimzi.io/cluster={o['metadata']['name']}")
    roles = {r for p in pools for r in (p.get("spec") or {}).get("roles") or []}
    for r in ("broker", "controller"):
        if r not in roles:
            P.add(f"{oid(o)}: no node pool has the {r} role")
    brokers = sum((p.get("spec") or {}).get("replicas", 0) for p in pools if "broker" in ((p.get("spec") or {}).get("roles") or []))
    cfg = (o["spec"].get("kafka") or {}).get("config") or {}
    for k in ("default.replication.factor", "offsets.topic.replication.factor", "transaction.state.log.replication.factor"):
        if k in cfg and int(cfg[k]) > brokers:
            P.add(f"{oid(o)}: {k}={cfg[k]} but only {brokers} broker(s)")
    for isr, rf in (("min.insync.replicas", "default.replication.factor"),
                    ("transaction.state.log.min.isr", "transaction.state.log.replication.factor")):
        if isr in cfg and rf in cfg and int(cfg[isr]) > int(cfg[rf]):
            P.add(f"{oid(o)}: {isr}={cfg[isr]} above {rf}={cfg[rf]}: producers with acks=all would always fail")
    ann = o["metadata"].get("annotations") or {}
    if ann.get("strimzi.io/node-pools") != "enabled" or ann.get("strimzi.io/kraft") != "enabled":
        P.add(f"{oid(o)}: Strimzi < 0.48 needs annotations strimzi.io/node-pools and strimzi.io/kraft = enabled")


def check_crd_kafkanodepool(o: dict, objs: list[dict]) -> None:
    """kafka.strimzi.io/v1beta2 KafkaNodePool: cluster label, roles, replicas, storage."""
    cluster = (o["metadata"].get("labels") or {}).get("strimzi.io/cluster")
    if not find(objs, "Kafka", cluster or "", ns_of(o)):
        P.add(f"{oid(o)}: label strimzi.io/cluster={cluster!r} names no Kafka in {ns_of(o)}")
    replicas = need(o, "spec.replicas", int)
    if replicas is not None and replicas < 1:
        P.add(f"{oid(o)}: spec.replicas must be >= 1")
    roles = need(o, "spec.roles", list) or []
    if not roles or set(roles) - {"broker", "controller"}:
        P.add(f"{oid(o)}: spec.roles must be a non-empty subset of broker, controller")
    storage = need(o, "spec.storage", dict) or {}
    one_of(o, "spec.storage.type", storage.get("type"), {"jbod", "persistent-claim", "ephemeral"})
    if storage.get("type") == "jbod":
        vols = storage.get("volumes") or []
        ids = [v.get("id") for v in vols]
        if not vols or len(set(ids)) != len(ids):
            P.add(f"{oid(o)}: jbod volumes must be non-empty with unique ids")
        if sum(1 for v in vols if v.get("kraftMetadata") == "shared") > 1:
            P.add(f"{oid(o)}: at most one volume may hold the KRaft metadata")
        for v in vols:
            one_of(o, "storage volume type", v.get("type"), {"persistent-claim", "ephemeral"})
            if v.get("type") == "persistent-claim" and not v.get("size"):
                P.add(f"{oid(o)}: persistent-claim volume {v.get('id')} needs a size")


def check_crd_kafkatopic(o: dict, objs: list[dict]) -> None:
    """kafka.strimzi.io/v1beta2 KafkaTopic: cluster label, topic name, partitions, replicas."""
    cluster = (o["metadata"].get("labels") or {}).get("strimzi.io/cluster")
    kafka = find(objs, "Kafka", cluster or "", ns_of(o))
    if not kafka:
        P.add(f"{oid(o)}: label strimzi.io/cluster={cluster!r} names no Kafka in {ns_of(o)}")
    elif "topicOperator" not in ((kafka["spec"].get("entityOperator") or {})):
        P.add(f"{oid(o)}: Kafka {cluster} runs no topic operator (spec.entityOperator.topicOperator)")
    name = (o.get("spec") or {}).get("topicName") or o["metadata"]["name"]
    if not re.fullmatch(r"[a-zA-Z0-9._-]{1,249}", name):
        P.add(f"{oid(o)}: topic name {name!r} is not a valid Kafka topic name")
    parts = (o.get("spec") or {}).get("partitions")
    if parts is not None and not (isinstance(parts, int) and parts >= 1):
        P.add(f"{oid(o)}: partitions must be >= 1")
    reps = (o.get("spec") or {}).get("replicas")
    if reps is not None and kafka:
        brokers = sum((p["spec"].get("replicas", 0)) for p in kafka_pools(objs, kafka) if "broker" in p["spec"].get("roles", []))
        if reps > brokers:
            P.add(f"{oid(o)}: replicas {reps} > {brokers} broker(s)")


def check_crd_cnpg_cluster(o: dict, objs: list[dict]) -> None:
    """postgresql.cnpg.io/v1 Cluster: instances, pinned image, storage, bootstrap, roles."""
    inst = need(o, "spec.instances", int)
    if inst is not None and inst < 1:
        P.add(f"{oid(o)}: spec.instances must be >= 1")
    image = o["spec"].get("imageName")
    if image is not None:
        _, tag, digest = parse_image(image)
        if (not tag and not digest) or tag == "latest":
            P.add(f"{oid(o)}: imageName {image} is not pinned")
    need(o, "spec.storage.size", str)
    if o["spec"].get("enableSuperuserAccess") is not False:
        P.add(f"{oid(o)}: enableSuperuserAccess should be false (no superuser password Secret)")
    initdb = ((o["spec"].get("bootstrap") or {}).get("initdb")) or {}
    for k in ("database", "owner"):
        if not initdb.get(k):
            P.add(f"{oid(o)}: bootstrap.initdb.{k} is required here")
    if not (initdb.get("secret") or {}).get("name"):
        P.add(f"{oid(o)}: bootstrap.initdb.secret.name (the owner's password) is required here")
    refs = (initdb.get("postInitApplicationSQLRefs") or {})
    for ref in refs.get("configMapRefs") or []:
        cm = find(objs, "ConfigMap", ref.get("name", ""), ns_of(o))
        if not cm or ref.get("key") not in (cm.get("data") or {}):
            P.add(f"{oid(o)}: postInitApplicationSQLRefs: ConfigMap {ref.get('name')} key {ref.get('key')} not in the render")
    for role in ((o["spec"].get("managed") or {}).get("roles") or []):
        if not role.get("name"):
            P.add(f"{oid(o)}: a managed role without a name")
        one_of(o, f"managed role {role.get('name')} ensure", role.get("ensure", "present"), {"present", "absent"})
        if role.get("login") and not (role.get("passwordSecret") or {}).get("name"):
            P.add(f"{oid(o)}: managed role {role.get('name')} logs in but has no passwordSecret")
        if role.get("superuser") or role.get("createrole") or role.get("createdb"):
            P.add(f"{oid(o)}: managed role {role.get('name')} has more than DML rights")
    hba = ((o["spec"].get("postgresql") or {}).get("pg_hba"))
    if hba is not None and not all(isinstance(x, str) and len(x.split()) >= 4 for x in hba):
        P.add(f"{oid(o)}: postgresql.pg_hba must be a list of pg_hba.conf lines")
    res = o["spec"].get("resources") or {}
    if not (res.get("requests") and res.get("limits")):
        P.add(f"{oid(o)}: resources.requests and limits are required here")


def check_crd_servicemonitor(o: dict, objs: list[dict]) -> None:
    """monitoring.coreos.com/v1 ServiceMonitor: selects Services that have the named ports."""
    sel = need(o, "spec.selector", dict)
    eps = need(o, "spec.endpoints", list) or []
    svcs = [s for s in objs if s.get("kind") == "Service" and ns_of(s) == ns_of(o)
            and labels_match(sel, s["metadata"].get("labels") or {})]
    if sel is not None and not svcs:
        P.add(f"{oid(o)}: selector matches no Service in {ns_of(o)}")
    for ep in eps:
        if not ep.get("port"):
            P.add(f"{oid(o)}: every endpoint needs a named port")
        for s in svcs:
            if ep.get("port") not in {p.get("name") for p in s["spec"].get("ports") or []}:
                P.add(f"{oid(o)}: Service {s['metadata']['name']} has no port named {ep.get('port')!r}")


def check_crd_podmonitor(o: dict, objs: list[dict]) -> None:
    """monitoring.coreos.com/v1 PodMonitor: selects pods that declare the named ports."""
    sel = need(o, "spec.selector", dict)
    eps = need(o, "spec.podMetricsEndpoints", list) or []
    pods = [(ow, t) for ow, t, _ in pods_in(objs, ns_of(o)) if labels_match(sel, (t.get("metadata") or {}).get("labels") or {})]
    if sel is not None and not pods and not (selector_keys(sel) & OPERATOR_POD_LABELS):
        P.add(f"{oid(o)}: selector matches no pod template in {ns_of(o)}")
    for ep in eps:
        if not ep.get("port"):
            P.add(f"{oid(o)}: every podMetricsEndpoint needs a named port")
        for ow, t in pods:
            if ep.get("port") not in {p.get("name") for p in container_ports(t, ow)}:
                P.add(f"{oid(o)}: pods of {oid(ow)} have no port named {ep.get('port')!r}")


DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def balanced(expr: str) -> bool:
    stack, quote = [], None
    pairs = {")": "(", "]": "[", "}": "{"}
    for ch in expr:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            stack.append(ch)
        elif ch in ")]}":
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack and quote is None


def check_crd_prometheusrule(o: dict, objs: list[dict]) -> None:
    """monitoring.coreos.com/v1 PrometheusRule: groups, alert names, expressions, severities."""
    groups = need(o, "spec.groups", list) or []
    seen_groups, seen_alerts = set(), set()
    for g in groups:
        if not g.get("name") or g["name"] in seen_groups:
            P.add(f"{oid(o)}: group names must be present and unique ({g.get('name')!r})")
        seen_groups.add(g.get("name"))
        for r in g.get("rules") or []:
            name = r.get("alert") or r.get("record")
            if not name:
                P.add(f"{oid(o)}: a rule with neither alert nor record")
                continue
            if r.get("alert"):
                if not re.fullmatch(r"[A-Z][A-Za-z0-9]+", name) or name in seen_alerts:
                    P.add(f"{oid(o)}: alert {name!r}: CamelCase and unique")
                seen_alerts.add(name)
                one_of(o, f"alert {name} labels.severity", (r.get("labels") or {}).get("severity"), {"critical", "warning", "info"})
                if not (r.get("annotations") or {}).get("summary"):
                    P.add(f"{oid(o)}: alert {name} has no annotations.summary")
            expr = str(r.get("expr") or "")
            if not expr.strip() or not balanced(expr):
                P.add(f"{oid(o)}: rule {name}: expr empty or unbalanced")
            if "for" in r and not DURATION.match(str(r["for"])):
                P.add(f"{oid(o)}: rule {name}: for {r['for']!r} is not a duration")


CRD_CHECKS = {
    ("agones.dev/v1", "Fleet"): check_crd_fleet,
    ("autoscaling.agones.dev/v1", "FleetAutoscaler"): check_crd_fleetautoscaler,
    ("kafka.strimzi.io/v1beta2", "Kafka"): check_crd_kafka,
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"): check_crd_kafkanodepool,
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): check_crd_kafkatopic,
    ("postgresql.cnpg.io/v1", "Cluster"): check_crd_cnpg_cluster,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_crd_servicemonitor,
    ("monitoring.coreos.com/v1", "PodMonitor"): check_crd_podmonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_crd_prometheusrule,
}


def check_crds(objs: list[dict]) -> int:
    n = 0
    for o in objs:
        group, _ = split_api(o.get("apiVersion", ""))
        if group in BUILTIN_GROUPS:
            continue
        fn = CRD_CHECKS.get((o.get("apiVersion"), o.get("kind")))
        if fn is None:
            P.add(f"{oid(o)}: apiVersion {o.get('apiVersion')} kind {o.get('kind')} has no check here "
                  f"(known: {sorted(k for _, k in CRD_CHECKS)})")
            continue
        if not o.get("metadata", {}).get("name"):
            P.add(f"{oid(o)}: metadata.name missing")
        fn(o, objs)
        n += 1
    return n


# =============================================================================================
# (e) Workloads
# =============================================================================================

def check_workloads(objs: list[dict]) -> int:
    bound_sas = set()
    for rb in objs:
        if rb.get("kind") in ("RoleBinding", "ClusterRoleBinding"):
            for s in rb.get("subjects") or []:
                if s.get("kind") == "ServiceAccount":
                    bound_sas.add((s.get("namespace") or ns_of(rb), s.get("name")))
    n = 0
    for owner, tpl, cat in pod_templates(objs):
        n += 1
        who = oid(owner)
        spec = tpl.get("spec") or {}
        psc = spec.get("securityContext") or {}
        for k in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(k):
                P.add(f"{who}: {k} is set")
        if cat == "agones":
            pass  # checked in check_crd_fleet: Agones owns the service account
        elif spec.get("automountServiceAccountToken") is not False:
            sa = (ns_of(owner), spec.get("serviceAccountName", "default"))
            if sa not in bound_sas:
                P.add(f"{who}: automountServiceAccountToken is not false, and no RoleBinding grants {sa[1]} anything")
        if spec.get("serviceAccountName") and cat != "agones":
            if not find(objs, "ServiceAccount", spec["serviceAccountName"], ns_of(owner)):
                P.add(f"{who}: ServiceAccount {spec['serviceAccountName']} not in the render")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            P.add(f"{who}: pod securityContext.seccompProfile.type is not RuntimeDefault")
        if psc.get("runAsUser") == 0 or psc.get("runAsGroup") == 0:
            P.add(f"{who}: runs as uid/gid 0")
        volumes = {v.get("name"): v for v in spec.get("volumes") or []}
        containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
        if not spec.get("containers"):
            P.add(f"{who}: no containers")
        for c in containers:
            cw = f"{who} container {c.get('name')}"
            image = c.get("image", "")
            _, tag, digest = parse_image(image)
            if (not tag and not digest) or tag == "latest":
                P.add(f"{cw}: image {image!r} is not pinned to a tag or digest")
            sc = c.get("securityContext") or {}
            if not (psc.get("runAsNonRoot") is True or sc.get("runAsNonRoot") is True):
                P.add(f"{cw}: runAsNonRoot is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                P.add(f"{cw}: allowPrivilegeEscalation is not false")
            if sc.get("readOnlyRootFilesystem") is not True:
                P.add(f"{cw}: readOnlyRootFilesystem is not true")
            if sc.get("privileged"):
                P.add(f"{cw}: privileged")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                P.add(f"{cw}: capabilities.drop does not contain ALL")
            if caps.get("add"):
                P.add(f"{cw}: adds capabilities {caps['add']}")
            if sc.get("seccompProfile") and sc["seccompProfile"].get("type") not in ("RuntimeDefault", "Localhost"):
                P.add(f"{cw}: seccompProfile {sc['seccompProfile']}")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(part) or {}):
                        P.add(f"{cw}: resources.{part}.{r} missing")
            try:
                if quantity(res["limits"]["memory"]) < quantity(res["requests"]["memory"]) or \
                        quantity(res["limits"]["cpu"]) < quantity(res["requests"]["cpu"]):
                    P.add(f"{cw}: a limit is below its request")
            except (KeyError, TypeError, ValueError):
                pass
            ports = {p.get("name"): p for p in container_ports({"spec": {"containers": [c]}})}
            probes = {k: c.get(k) for k in ("startupProbe", "livenessProbe", "readinessProbe")}
            if cat != "job":
                for k, want in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
                    pr = probes.get(k)
                    if not pr:
                        if k != "startupProbe":
                            P.add(f"{cw}: no {k}")
                        continue
                    hg = pr.get("httpGet") or {}
                    if hg.get("path") != want:
                        P.add(f"{cw}: {k} should GET {want}, gets {hg.get('path')!r}")
                    port = hg.get("port")
                    if isinstance(port, str) and port not in ports:
                        P.add(f"{cw}: {k} port {port!r} is not a declared container port")
                    if isinstance(port, int) and port not in {p.get("containerPort") for p in ports.values()}:
                        P.add(f"{cw}: {k} port {port} is not a declared container port")
            defined: list[str] = []
            for e in c.get("env") or []:
                for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(e.get("value", ""))):
                    if ref not in defined:
                        P.add(f"{cw}: env {e['name']} refers to $({ref}), which is not defined before it")
                defined.append(e["name"])
            for m in c.get("volumeMounts") or []:
                v = volumes.get(m.get("name"))
                if v is None:
                    P.add(f"{cw}: volumeMount {m.get('name')} has no volume")
                    continue
                if not m.get("readOnly"):
                    if "emptyDir" not in v:
                        P.add(f"{cw}: writable mount {m.get('mountPath')} is not an emptyDir")
                    elif not (v.get("emptyDir") or {}).get("sizeLimit"):
                        P.add(f"{cw}: emptyDir {m.get('name')} has no sizeLimit")
    return n


# =============================================================================================
# Cross-checks with the Rust sources and between objects
# =============================================================================================

def rust_struct_envs(path: str, struct: str) -> set[str]:
    text = open(os.path.join(ROOT, path), encoding="utf-8").read()
    m = re.search(rf"pub struct {struct}\b[^{{]*\{{", text)
    if not m:
        P.add(f"{path}: struct {struct} not found")
        return set()
    depth, i = 1, m.end()
    while depth and i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    body = text[m.end():i]
    envs = set(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', body))
    # Flattened argument groups (`#[command(flatten)] pub ws: shared_net::ws::WsArgs`).
    for ty in re.findall(r"#\[command\(flatten\)\]\s*pub\s+\w+\s*:\s*([\w:]+)", body):
        name = ty.split("::")[-1]
        for f in rust_sources():
            if re.search(rf"pub struct {name}\b", open(f, encoding="utf-8").read()):
                envs |= rust_struct_envs(rel(f), name)
                break
        else:
            P.add(f"{path}: flattened {ty} not found in the Rust sources")
    return envs


def rust_sources() -> list[str]:
    out = []
    for d in ("shared-sim", "shared-net", "server-instance", "server-connection", "services", "libs", "bin", "tools"):
        out += glob.glob(os.path.join(ROOT, d, "**", "src", "**", "*.rs"), recursive=True)
    return out


def rust_metrics() -> dict[str, str]:
    """metric name -> counter|gauge|histogram, from the macros in non-test Rust sources."""
    names: dict[str, str] = {}
    for f in rust_sources():
        text = open(f, encoding="utf-8").read()
        text = text.split("#[cfg(test)]")[0]
        for kind, name in re.findall(r"\b(counter|gauge|histogram)!\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"", text):
            names[name] = kind
    tele = open(os.path.join(ROOT, "libs/telemetry/src/lib.rs"), encoding="utf-8").read()
    for name in re.findall(r'"(process_[a-z_]+)"', tele):
        names[name] = "counter" if name.endswith("_total") else "gauge"
    return names


def croft_subcommands() -> set[str]:
    text = open(os.path.join(ROOT, "bin/croft/src/main.rs"), encoding="utf-8").read()
    m = re.search(r"enum Command \{(.*?)\n\}", text, re.S)
    return {v.lower() for v in re.findall(r"^\s{4}([A-Z][A-Za-z]+)\s*[({,]", m.group(1) if m else "", re.M)}


def load_pending() -> dict:
    with open(os.path.join(DEPLOY, "rust-pending.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def promql_metrics(expr: str) -> set[str]:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "{}", expr)  # matchers
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    tokens = set(re.findall(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?=\s*(?:\{|\[|\)|$|\s|[-+*/<>=!,]))", expr))
    keywords = {"sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile",
                "absent", "and", "or", "unless", "by", "without", "bool", "topk", "bottomk", "le",
                "humanize", "offset", "time", "vector", "scalar", "clamp_min", "clamp_max", "label_replace",
                "delta", "deriv", "avg_over_time", "max_over_time", "min_over_time", "quantile", "stddev"}
    return {t for t in tokens if t not in keywords and not t.startswith("$")}


def check_rust(objs: list[dict], overlay: str, pending: dict, metrics: dict[str, str], struct_envs: dict) -> None:
    pend_env = {(e["name"], b) for e in pending.get("env") or [] for b in e.get("binaries") or []}
    pend_metrics = {m["name"]: m.get("type", "gauge") for m in pending.get("metrics") or []}
    subcommands = croft_subcommands()
    for owner, tpl, _ in pod_templates(objs):
        for c in (tpl.get("spec") or {}).get("containers") or []:
            cw = f"{oid(owner)} container {c.get('name')}"
            base = parse_image(c.get("image", ""))[0].rsplit("/", 1)[-1]
            if base == "croft":
                args = c.get("args") or []
                if not args or args[0] not in subcommands:
                    P.add(f"{cw}: `croft {' '.join(args)}`: not a croft subcommand ({sorted(subcommands)})")
            binary = binary_of(c)
            if binary is None:
                P.add(f"{cw}: image {c.get('image')} args {c.get('args')} is no known croft binary")
                continue
            known = struct_envs[binary]
            env = env_map(c)
            referenced = {r for v in env.values() for r in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", v)}
            for name in env:
                if name in EXTRA_ENV or name in referenced:
                    continue
                if not name.startswith("CROFT_"):
                    P.add(f"{cw}: env {name} is read by nothing in croft")
                elif name not in known and (name, binary) not in pend_env:
                    P.add(f"{cw}: env {name} is not a flag of `{binary}` and not listed in deploy/rust-pending.yaml")
            # Listen addresses: all interfaces, on the ports the probes and Services use.
            ports = {p.get("name"): p.get("containerPort") for p in container_ports(tpl, owner)}
            addr = env.get(TELEMETRY_ADDR.get(binary, ""), "")
            if binary in TELEMETRY_ADDR:
                m = re.fullmatch(r"0\.0\.0\.0:(\d+)", addr)
                if not m:
                    P.add(f"{cw}: {TELEMETRY_ADDR[binary]}={addr!r}: must bind 0.0.0.0:PORT for probes and scraping")
                else:
                    for k in ("livenessProbe", "readinessProbe", "startupProbe"):
                        port = ((c.get(k) or {}).get("httpGet") or {}).get("port")
                        port = ports.get(port, port)
                        if port is not None and port != int(m.group(1)):
                            P.add(f"{cw}: {k} on port {port}, but /healthz and /readyz are served on {m.group(1)}")
            if binary == "auth":
                m = re.fullmatch(r"0\.0\.0\.0:(\d+)", env.get("CROFT_AUTH_HTTP", ""))
                if not m or ports.get("https") != int(m.group(1)):
                    P.add(f"{cw}: CROFT_AUTH_HTTP must bind 0.0.0.0 on the port named https")
                if "CROFT_TLS_CERT" not in env and env.get("CROFT_ALLOW_PLAIN_HTTP") not in ("true", "1"):
                    P.add(f"{cw}: no TLS certificate and no CROFT_ALLOW_PLAIN_HTTP: auth refuses to start")
                if env.get("CROFT_DEV"):
                    P.add(f"{cw}: CROFT_DEV generates throwaway keys: never in a cluster")
            if binary == "connection":
                m = re.fullmatch(r"0\.0\.0\.0:(\d+)", env.get("CROFT_CONNECTION_UDP", ""))
                sockets = max(1, math.ceil(int(env.get("CROFT_CONNECTION_MAX_CLIENTS", "1024")) / MAX_CLIENTS_PER_SOCKET))
                udp = sorted(p.get("containerPort") for p in container_ports(tpl) if p.get("protocol") == "UDP")
                if not m or udp != [int(m.group(1)) + i for i in range(sockets)]:
                    P.add(f"{cw}: UDP container ports {udp} do not match CROFT_CONNECTION_UDP and "
                          f"{sockets} socket(s) for CROFT_CONNECTION_MAX_CLIENTS")
            if binary == "instance":
                m = re.fullmatch(r"0\.0\.0\.0:(\d+)", env.get("CROFT_INSTANCE_UDP", ""))
                udp = [p.get("containerPort") for p in container_ports(tpl, owner) if p.get("protocol") == "UDP"]
                if env.get("CROFT_INSTANCE_SHARDS", "1") != "1":
                    P.add(f"{cw}: one shard per pod is what the port wiring assumes")
                if not m or udp != [int(m.group(1))]:
                    P.add(f"{cw}: UDP ports {udp} do not match CROFT_INSTANCE_UDP {env.get('CROFT_INSTANCE_UDP')!r}")
                drain = int(env.get("CROFT_DRAIN_SECONDS", "60"))
                grace = (tpl.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
                if grace < drain + 10:
                    P.add(f"{cw}: terminationGracePeriodSeconds {grace} leaves no time after the {drain} s drain")
                if owner.get("kind") == "Fleet":
                    cap = ((owner["spec"]["template"]["spec"].get("counters") or {}).get("matches") or {}).get("capacity")
                    if str(cap) != env.get("CROFT_INSTANCE_MAX_MATCHES"):
                        P.add(f"{cw}: Fleet counter matches capacity {cap} != CROFT_INSTANCE_MAX_MATCHES")
                    if env.get("CROFT_AGONES") != "true":
                        P.add(f"{cw}: a Fleet's instance must run with CROFT_AGONES=true")
                elif "CROFT_INSTANCE_PUBLIC_IP" not in env:
                    P.add(f"{cw}: without Agones the instance needs CROFT_INSTANCE_PUBLIC_IP for its tokens")
    # Matchmaking and instances agree on the slots per instance.
    mm = find(objs, "Deployment", "matchmaking", "croft")
    inst_caps = {env_map(c).get("CROFT_INSTANCE_MAX_MATCHES") for o, t, _ in pod_templates(objs)
                 for c in (t.get("spec") or {}).get("containers") or [] if binary_of(c) == "instance"}
    if mm:
        mcap = env_map(mm["spec"]["template"]["spec"]["containers"][0]).get("CROFT_INSTANCE_MAX_MATCHES")
        if inst_caps and inst_caps != {mcap}:
            P.add(f"matchmaking CROFT_INSTANCE_MAX_MATCHES={mcap} but instances use {sorted(map(str, inst_caps))}")
    # Metrics in alerts, the dashboard and the HPA.
    exprs: list[tuple[str, str]] = []
    for o in objs:
        if o.get("kind") == "PrometheusRule":
            for g in o["spec"].get("groups") or []:
                for r in g.get("rules") or []:
                    exprs.append((f"{oid(o)} {r.get('alert') or r.get('record')}", str(r.get("expr", ""))))
        if o.get("kind") == "ConfigMap" and (o["metadata"].get("labels") or {}).get("grafana_dashboard") == "1":
            for key, text in (o.get("data") or {}).items():
                try:
                    dash = json.loads(text)
                except ValueError as e:
                    P.add(f"{oid(o)} {key}: not JSON: {e}")
                    continue
                for panel in dash.get("panels") or []:
                    for t in panel.get("targets") or []:
                        exprs.append((f"dashboard {key} panel {panel.get('title')!r}", t.get("expr", "")))
        if o.get("kind") == "HorizontalPodAutoscaler":
            for m in o["spec"].get("metrics") or []:
                if m.get("type") == "Pods":
                    exprs.append((oid(o), m["pods"]["metric"]["name"]))
    for where, expr in exprs:
        for name in promql_metrics(expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            kind = metrics.get(name) or pend_metrics.get(name)
            if kind is None and base != name and (metrics.get(base) or pend_metrics.get(base)) == "histogram":
                kind = "histogram"
            if kind is None and name not in EXTERNAL_METRICS:
                P.add(f"{where}: metric {name} is exported by no Rust code and not listed in deploy/rust-pending.yaml")
            if kind == "histogram" and base == name:
                P.add(f"{where}: {name} is a histogram: query {name}_bucket/_sum/_count")


def check_pending_list(pending: dict, metrics: dict[str, str], struct_envs: dict) -> None:
    P.context = "deploy/rust-pending.yaml"
    for e in pending.get("env") or []:
        for b in e.get("binaries") or []:
            if b not in struct_envs:
                P.add(f"env {e.get('name')}: unknown binary {b!r}")
            elif e.get("name") in struct_envs[b]:
                P.add(f"env {e['name']} now exists in `{b}`'s config: delete it from the pending list")
        if not e.get("flag") or not e.get("why"):
            P.add(f"env {e.get('name')}: needs flag and why")
    for m in pending.get("metrics") or []:
        if m.get("name") in metrics:
            P.add(f"metric {m['name']} is now exported by the Rust code: delete it from the pending list")
        if m.get("type") not in ("counter", "gauge", "histogram") or not m.get("why"):
            P.add(f"metric {m.get('name')}: needs type and why")


def secret_refs(objs: list[dict]) -> list[tuple[str, str, str, str | None]]:
    """(where, namespace, secret, key or None)"""
    out = []
    for owner, tpl, _ in pod_templates(objs):
        ns = ns_of(owner)
        spec = tpl.get("spec") or {}
        for v in spec.get("volumes") or []:
            if "secret" in v:
                items = (v["secret"].get("items") or [{"key": None}])
                out += [(oid(owner), ns, v["secret"]["secretName"], i.get("key")) for i in items]
            for src in (v.get("projected") or {}).get("sources") or []:
                if "secret" in src:
                    items = src["secret"].get("items") or [{"key": None}]
                    out += [(oid(owner), ns, src["secret"]["name"], i.get("key")) for i in items]
        for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    out.append((oid(owner), ns, ref["name"], ref.get("key")))
            for ef in c.get("envFrom") or []:
                if "secretRef" in ef:
                    out.append((oid(owner), ns, ef["secretRef"]["name"], None))
    for o in objs:
        if o.get("kind") == "Cluster" and o.get("apiVersion") == "postgresql.cnpg.io/v1":
            s = ((o["spec"].get("bootstrap") or {}).get("initdb") or {}).get("secret")
            if s:
                out.append((oid(o), ns_of(o), s["name"], None))
            for r in (o["spec"].get("managed") or {}).get("roles") or []:
                if r.get("passwordSecret"):
                    out.append((oid(o), ns_of(o), r["passwordSecret"]["name"], None))
    return out


def check_secrets_and_configmaps(objs: list[dict], used: set) -> None:
    rendered_secrets = {(ns_of(o), o["metadata"]["name"]) for o in objs if o.get("kind") == "Secret"}
    for where, ns, name, key in secret_refs(objs):
        used.add((ns, name))
        docs = EXTERNAL_SECRETS.get(ns, {}).get(name) or OPERATOR_SECRETS.get(ns, {}).get(name)
        if docs is None and (ns, name) not in rendered_secrets:
            P.add(f"{where}: Secret {ns}/{name} is neither in the render nor a documented external or operator secret")
        elif docs is not None and key is not None and key not in docs:
            P.add(f"{where}: Secret {ns}/{name} key {key!r} is not one of the documented keys {sorted(docs)}")
    for o in objs:
        if o.get("kind") == "Secret":
            P.add(f"{oid(o)}: a Secret in the manifests; secrets come from outside (deploy/README.md, Secrets)")
    for owner, tpl, _ in pod_templates(objs):
        ns = ns_of(owner)
        spec = tpl.get("spec") or {}
        refs = []
        for v in spec.get("volumes") or []:
            if "configMap" in v:
                refs += [(v["configMap"]["name"], i.get("key")) for i in v["configMap"].get("items") or [{"key": None}]]
            for src in (v.get("projected") or {}).get("sources") or []:
                if "configMap" in src:
                    refs += [(src["configMap"]["name"], i.get("key")) for i in src["configMap"].get("items") or [{"key": None}]]
        for c in spec.get("containers") or []:
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    refs.append((ref["name"], ref.get("key")))
        for name, key in refs:
            cm = find(objs, "ConfigMap", name, ns)
            if not cm:
                P.add(f"{oid(owner)}: ConfigMap {ns}/{name} is not in the render")
            elif key is not None and key not in (cm.get("data") or {}):
                P.add(f"{oid(owner)}: ConfigMap {ns}/{name} has no key {key!r}")


def check_external_secrets_documented(used_all: set) -> None:
    P.context = "secrets"
    readme = open(os.path.join(DEPLOY, "README.md"), encoding="utf-8").read() if os.path.exists(
        os.path.join(DEPLOY, "README.md")) else ""
    for ns, secrets in EXTERNAL_SECRETS.items():
        for name, keys in secrets.items():
            if (ns, name) not in used_all:
                P.add(f"documented external Secret {ns}/{name} is used by no overlay: drop it from EXTERNAL_SECRETS")
            if f"`{name}`" not in readme:
                P.add(f"deploy/README.md does not document the Secret `{name}`")
            for k in keys:
                if f"`{k}`" not in readme:
                    P.add(f"deploy/README.md does not name the key `{k}` of Secret `{name}`")


def pod_label_sets(objs: list[dict], ns: str) -> list[tuple[dict, dict]]:
    return [(o, (t.get("metadata") or {}).get("labels") or {}) for o, t, _ in pods_in(objs, ns)]


def selects_something(objs: list[dict], ns: str, selector: dict | None) -> bool:
    if selector_keys(selector) & OPERATOR_POD_LABELS:
        return True
    return any(labels_match(selector, labels) for _, labels in pod_label_sets(objs, ns))


def check_relations(objs: list[dict]) -> None:
    kinds_ns = {(ns_of(o), o["metadata"]["name"]) for o in objs if o.get("kind") == "Namespace"}
    for o in objs:
        if o.get("kind") in CLUSTER_SCOPED:
            continue
        ns = ns_of(o)
        if ns not in NAMESPACES:
            P.add(f"{oid(o)}: namespace {ns!r} is not one of {sorted(NAMESPACES)}")
    declared = {o["metadata"]["name"] for o in objs if o.get("kind") == "Namespace"}
    if declared != NAMESPACES:
        P.add(f"Namespaces in the render {sorted(declared)}, expected {sorted(NAMESPACES)}")
    del kinds_ns
    # Services
    for s in [o for o in objs if o.get("kind") == "Service"]:
        sel = s["spec"].get("selector") or {}
        ns = ns_of(s)
        sts_pod = sel.get("statefulset.kubernetes.io/pod-name")
        plain = {k: v for k, v in sel.items() if k != "statefulset.kubernetes.io/pod-name"}
        matches = [(o, t) for o, t, _ in pods_in(objs, ns)
                   if labels_match({"matchLabels": plain}, (t.get("metadata") or {}).get("labels") or {})]
        if not matches:
            P.add(f"{oid(s)}: selector {sel} matches no pod template in {ns}")
        if sts_pod:
            ok = False
            for o, _ in matches:
                if o.get("kind") == "StatefulSet":
                    m = re.fullmatch(rf"{re.escape(o['metadata']['name'])}-(\d+)", sts_pod)
                    if m and int(m.group(1)) < o["spec"].get("replicas", 1):
                        ok = True
            if not ok:
                P.add(f"{oid(s)}: pod {sts_pod} is not a pod of a StatefulSet it selects (check replicas)")
        for p in s["spec"].get("ports") or []:
            tp = p.get("targetPort", p.get("port"))
            for o, t in matches:
                cps = container_ports(t, o)
                if isinstance(tp, str) and tp not in {c.get("name") for c in cps}:
                    P.add(f"{oid(s)}: targetPort {tp!r} is not a port of {oid(o)}")
                elif isinstance(tp, int) and tp not in {c.get("containerPort") for c in cps}:
                    P.add(f"{oid(s)}: targetPort {tp} is not a port of {oid(o)}")
        # Exposure: only the auth edge and connection netcode leave the cluster.
        if s["spec"].get("type") in ("LoadBalancer", "NodePort"):
            protos = {p.get("protocol", "TCP") for p in s["spec"].get("ports") or []}
            app = plain.get("app.kubernetes.io/name")
            if not ((app == "auth" and protos == {"TCP"}) or (app == "connection" and protos == {"UDP"})):
                P.add(f"{oid(s)}: {s['spec']['type']} for {app} {sorted(protos)}: only the auth edge (TCP) "
                      "and connection netcode (UDP) are exposed")
            if s["spec"].get("externalTrafficPolicy") != "Local":
                P.add(f"{oid(s)}: externalTrafficPolicy should be Local (keeps client addresses)")
    # StatefulSet serviceName
    for o in objs:
        if o.get("kind") == "StatefulSet":
            svc = find(objs, "Service", o["spec"].get("serviceName", ""), ns_of(o))
            if not svc or svc["spec"].get("clusterIP") != "None":
                P.add(f"{oid(o)}: serviceName must name a headless Service")
    # PDBs, HPAs
    for o in objs:
        if o.get("kind") == "PodDisruptionBudget":
            if not selects_something(objs, ns_of(o), o["spec"].get("selector")):
                P.add(f"{oid(o)}: selector matches no pods")
        if o.get("kind") == "HorizontalPodAutoscaler":
            ref = o["spec"]["scaleTargetRef"]
            if not find(objs, ref["kind"], ref["name"], ns_of(o)):
                P.add(f"{oid(o)}: scaleTargetRef {ref['kind']}/{ref['name']} not in the render")
    for o, t, cat in pod_templates(objs):
        labels = (t.get("metadata") or {}).get("labels") or {}
        sel = (o.get("spec") or {}).get("selector")
        if cat != "agones" and o.get("kind") != "Job" and not labels_match(sel, labels):
            P.add(f"{oid(o)}: selector does not match its own pod template labels")
        if o.get("kind") in ("Deployment", "StatefulSet") and o["spec"].get("replicas", 1) >= 2:
            if not any(p.get("kind") == "PodDisruptionBudget" and ns_of(p) == ns_of(o)
                       and labels_match(p["spec"].get("selector"), labels) for p in objs):
                P.add(f"{oid(o)}: {o['spec']['replicas']} replicas but no PodDisruptionBudget")
    auth = find(objs, "Deployment", "auth", "croft")
    if auth and auth["spec"].get("replicas", 1) < 2:
        P.add(f"{oid(auth)}: auth needs >= 2 replicas")
    # Network policies
    for ns in NAMESPACES:
        if not any(o.get("kind") == "NetworkPolicy" and ns_of(o) == ns and o["spec"].get("podSelector") == {}
                   and o["spec"].get("policyTypes") == ["Ingress"] and not o["spec"].get("ingress") for o in objs):
            P.add(f"namespace {ns}: no default-deny ingress NetworkPolicy")
    for np in [o for o in objs if o.get("kind") == "NetworkPolicy"]:
        ns = ns_of(np)
        sel = np["spec"].get("podSelector")
        if sel and not selects_something(objs, ns, sel):
            P.add(f"{oid(np)}: podSelector matches no pods")
        targets = [(o, t) for o, t, _ in pods_in(objs, ns)
                   if labels_match(sel, (t.get("metadata") or {}).get("labels") or {})]
        target_apps = {(t.get("metadata") or {}).get("labels", {}).get("app.kubernetes.io/name") for _, t in targets}
        for direction in ("ingress", "egress"):
            for rule in np["spec"].get(direction) or []:
                peers = rule.get("from" if direction == "ingress" else "to")
                for peer in peers or []:
                    pns = ns
                    if "namespaceSelector" in peer:
                        pns = (peer["namespaceSelector"].get("matchLabels") or {}).get("kubernetes.io/metadata.name")
                        if pns is None:
                            P.add(f"{oid(np)}: namespaceSelector must name a namespace by kubernetes.io/metadata.name")
                            continue
                    if pns in EXTERNAL_NAMESPACES:
                        continue
                    if pns not in NAMESPACES:
                        P.add(f"{oid(np)}: peer namespace {pns!r} is unknown")
                    elif "podSelector" in peer and not selects_something(objs, pns, peer["podSelector"]):
                        P.add(f"{oid(np)}: {direction} peer {peer['podSelector']} matches no pods in {pns}")
                if direction == "ingress":
                    open_to_world = peers is None or any(
                        (p.get("ipBlock") or {}).get("cidr") in ("0.0.0.0/0", "::/0") for p in peers)
                    if open_to_world:
                        protos = {pt.get("protocol", "TCP") for pt in rule.get("ports") or [{}]}
                        ok = (target_apps == {"auth"} and protos == {"TCP"}
                              and [pt.get("port") for pt in rule.get("ports") or []] == [7000]) or \
                             (target_apps <= {"connection", "server-instance"} and target_apps and protos == {"UDP"})
                        if not ok:
                            P.add(f"{oid(np)}: ingress from anywhere to {sorted(a or '?' for a in target_apps)} "
                                  f"{sorted(protos)}: only the auth edge (TCP 7000) and netcode (UDP) may be public")
                    # Ports named in a rule exist on the pods it protects.
                    for pt in rule.get("ports") or []:
                        port, end = pt.get("port"), pt.get("endPort", pt.get("port"))
                        proto = pt.get("protocol", "TCP")
                        for o, t in targets:
                            have = {c.get("containerPort") for c in container_ports(t, o) if c.get("protocol", "TCP") == proto}
                            if isinstance(port, int) and not any(port <= h <= end for h in have):
                                P.add(f"{oid(np)}: {proto} {port}-{end} is no port of {oid(o)}")
    # Who may reach Postgres and Kafka: only labelled services.
    for o, t, _ in pod_templates(objs):
        labels = (t.get("metadata") or {}).get("labels") or {}
        app = labels.get("app.kubernetes.io/name")
        if labels.get("croft.dev/db-client") == "true" and app not in ("auth", "matchmaking", "connection", "migrate", "server-instance"):
            P.add(f"{oid(o)}: {app} is labelled croft.dev/db-client but is no database client")
        if labels.get("croft.dev/kafka-client") == "true" and app not in ("matchmaking", "server-instance", "connection"):
            P.add(f"{oid(o)}: {app} is labelled croft.dev/kafka-client but is no Kafka client")
        env = {k: v for c in (t.get("spec") or {}).get("containers") or [] for k, v in env_map(c).items()}
        if "CROFT_DATABASE_URL_FILE" in env and labels.get("croft.dev/db-client") != "true":
            P.add(f"{oid(o)}: uses the database but lacks croft.dev/db-client=true (its traffic would be dropped)")
        if "CROFT_KAFKA_BROKERS" in env and labels.get("croft.dev/kafka-client") != "true":
            P.add(f"{oid(o)}: uses Kafka but lacks croft.dev/kafka-client=true (its traffic would be dropped)")
    pg = [np for np in objs if np.get("kind") == "NetworkPolicy"
          and ((np["spec"].get("podSelector") or {}).get("matchLabels") or {}).get("cnpg.io/cluster")]
    if not pg:
        P.add("no NetworkPolicy protects the Postgres pods")
    for np in pg:
        for rule in np["spec"].get("ingress") or []:
            for peer in rule.get("from") or [None]:
                if peer is None or "ipBlock" in peer:
                    P.add(f"{oid(np)}: Postgres reachable from outside the cluster")
    for k in [o for o in objs if o.get("kind") == "Kafka"]:
        for li in k["spec"]["kafka"].get("listeners") or []:
            peers = li.get("networkPolicyPeers")
            if not peers or li.get("type") != "internal":
                P.add(f"{oid(k)}: listener {li.get('name')} must be internal with networkPolicyPeers")
            for peer in peers or []:
                if (peer.get("podSelector") or {}).get("matchLabels") != {"croft.dev/kafka-client": "true"}:
                    P.add(f"{oid(k)}: listener {li.get('name')} peer {peer} is not the croft.dev/kafka-client label")


def check_urls(objs: list[dict]) -> None:
    """In-cluster addresses in env vars name Services (or operator Services) and ports."""
    for owner, tpl, _ in pod_templates(objs):
        for c in (tpl.get("spec") or {}).get("containers") or []:
            for name, value in env_map(c).items():
                for host, port in re.findall(r"([a-z0-9-]+(?:\.[a-z0-9-]+)*\.svc(?:\.cluster\.local)?):(\d+)", value):
                    svc, ns = host.split(".")[0], host.split(".")[1]
                    port = int(port)
                    where = f"{oid(owner)} env {name}"
                    m = re.fullmatch(r"(.+)-kafka-bootstrap", svc)
                    if m:
                        k = find(objs, "Kafka", m.group(1), ns)
                        if not k or port not in {li.get("port") for li in k["spec"]["kafka"].get("listeners") or []}:
                            P.add(f"{where}: {host}:{port}: no Kafka {m.group(1)} with a listener on {port}")
                        continue
                    s = find(objs, "Service", svc, ns)
                    if not s:
                        P.add(f"{where}: {host}: no Service {ns}/{svc}")
                    elif port not in {p.get("port") for p in s["spec"].get("ports") or []}:
                        P.add(f"{where}: Service {ns}/{svc} has no port {port}")


def check_connection_public(objs: list[dict]) -> None:
    sts = find(objs, "StatefulSet", "connection", "croft")
    cm = find(objs, "ConfigMap", "connection-public", "croft")
    if not sts or not cm:
        P.add("StatefulSet connection and ConfigMap connection-public must both be in the render")
        return
    n = sts["spec"].get("replicas", 1)
    env = env_map(sts["spec"]["template"]["spec"]["containers"][0])
    base_port = int(env.get("CROFT_CONNECTION_UDP", "0:5100").rsplit(":", 1)[1])
    sockets = max(1, math.ceil(int(env.get("CROFT_CONNECTION_MAX_CLIENTS", "1024")) / MAX_CLIENTS_PER_SOCKET))
    data = cm.get("data") or {}
    ips = {k: v for k, v in data.items() if re.fullmatch(r"connection-\d+", k)}
    want_keys = {f"connection-{i}" for i in range(n)}
    if set(ips) != want_keys:
        P.add(f"ConfigMap connection-public has IPs for {sorted(ips)}, the StatefulSet has pods {sorted(want_keys)}")
    expected = []
    for i in range(n):
        ip = ips.get(f"connection-{i}", "")
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            P.add(f"ConfigMap connection-public: connection-{i} = {ip!r} is not an IP address")
        expected += [f"{ip}:{base_port + j}" for j in range(sockets)]
        svc = find(objs, "Service", f"connection-{i}-udp", "croft")
        if not svc:
            P.add(f"no Service connection-{i}-udp for pod connection-{i}")
            continue
        if svc["spec"].get("selector", {}).get("statefulset.kubernetes.io/pod-name") != f"connection-{i}":
            P.add(f"{oid(svc)}: does not select pod connection-{i}")
        if svc["spec"].get("loadBalancerIP") not in (None, ip):
            P.add(f"{oid(svc)}: loadBalancerIP {svc['spec'].get('loadBalancerIP')} != connection-{i} address {ip}")
        ports = sorted(p.get("port") for p in svc["spec"].get("ports") or [] if p.get("protocol") == "UDP")
        if ports != [base_port + j for j in range(sockets)]:
            P.add(f"{oid(svc)}: UDP ports {ports}, expected {[base_port + j for j in range(sockets)]} (port = targetPort, as netcode announces it)")
        for p in svc["spec"].get("ports") or []:
            tp = p.get("targetPort")
            cps = {c.get("name"): c.get("containerPort") for c in container_ports(sts["spec"]["template"])}
            if cps.get(tp, tp) != p.get("port"):
                P.add(f"{oid(svc)}: port {p.get('port')} must forward to the same container port (netcode's public address)")
    extra = [s for s in objs if s.get("kind") == "Service" and re.fullmatch(r"connection-\d+-udp", s["metadata"]["name"])
             and int(s["metadata"]["name"].split("-")[1]) >= n]
    for s in extra:
        P.add(f"{oid(s)}: no such pod (StatefulSet has {n} replicas)")
    listed = data.get("connection-servers", "").split(",")
    if listed != expected:
        P.add(f"connection-servers {listed} should be {expected} (every socket of every connection pod)")


def check_topics(objs: list[dict]) -> None:
    schemas = {os.path.basename(p)[: -len(".schema.json")] for p in glob.glob(os.path.join(ROOT, "docs/events/*.schema.json"))}
    topics = {(o.get("spec") or {}).get("topicName") or o["metadata"]["name"] for o in objs if o.get("kind") == "KafkaTopic"}
    if schemas != topics:
        P.add(f"KafkaTopics {sorted(topics - schemas)} have no schema; event types {sorted(schemas - topics)} have no topic")


def dockerfile_targets() -> set[str]:
    text = open(os.path.join(DEPLOY, "Dockerfile"), encoding="utf-8").read()
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I)) - {"builder"}


def check_images(objs: list[dict]) -> None:
    targets = dockerfile_targets()
    for owner, tpl, _ in pod_templates(objs):
        for c in (tpl.get("spec") or {}).get("containers") or []:
            base = parse_image(c.get("image", ""))[0].rsplit("/", 1)[-1]
            if base not in targets:
                P.add(f"{oid(owner)}: image {c.get('image')} is not built by deploy/Dockerfile (targets {sorted(targets)})")


# =============================================================================================
# Main
# =============================================================================================

def main() -> int:
    check_listing()
    pending = load_pending()
    metrics = rust_metrics()
    struct_envs = {b: rust_struct_envs(path, struct) for (b, path, struct) in BINARIES.values()}
    check_pending_list(pending, metrics, struct_envs)
    use_kubectl = kubectl_kustomize_available()
    used_secrets: set = set()
    summary = []
    for overlay in OVERLAYS:
        P.context = overlay
        d = os.path.join(K8S, overlay)
        try:
            objs = build(d)
        except (RenderError, OSError, yaml.YAMLError) as e:
            P.add(f"render: {e}")
            continue
        renderer = "python"
        if use_kubectl:
            try:
                kobjs = kubectl_build(d)
                mine = {key_of(o): o for o in objs}
                theirs = {key_of(o): o for o in kobjs}
                for k in sorted(set(mine) ^ set(theirs), key=str):
                    P.add(f"render mismatch: {k} only in {'kubectl' if k in theirs else 'python'} render")
                for k in sorted(set(mine) & set(theirs), key=str):
                    for line in diff(mine[k], theirs[k])[:5]:
                        P.add(f"render mismatch {k[1]}/{k[3]}: {line}")
                objs = kobjs
                renderer = "kubectl kustomize (python render identical)"
            except (RenderError, OSError, subprocess.SubprocessError, yaml.YAMLError) as e:
                P.add(f"kubectl: {e}")
        n_schema = check_schemas(objs)
        n_crd = check_crds(objs)
        n_pods = check_workloads(objs)
        check_rust(objs, overlay, pending, metrics, struct_envs)
        check_secrets_and_configmaps(objs, used_secrets)
        check_relations(objs)
        check_urls(objs)
        check_connection_public(objs)
        check_topics(objs)
        check_images(objs)
        summary.append(f"  {overlay}: {len(objs)} objects rendered by {renderer}; {n_schema} validated against "
                       f"Kubernetes {K8S_VERSION} schemas, {n_crd} custom resources checked, {n_pods} pod templates checked")
    if len(summary) == len(OVERLAYS):  # only meaningful when every overlay rendered
        check_external_secrets_documented(used_secrets)
    if P.items:
        print(f"deploy/k8s: FAILED ({len(P.items)} problem(s))")
        for item in P.items:
            print(f"  - {item}")
        return 1
    print("deploy/k8s: ok")
    for line in summary:
        print(line)
    n_pending = sum(len(pending.get(k) or []) for k in ("env", "metrics", "behaviour"))
    print(f"  {n_pending} item(s) the Rust side still has to add: deploy/rust-pending.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
