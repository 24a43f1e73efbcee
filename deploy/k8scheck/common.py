"""Shared by every check: paths, the expectations about the cluster, the problem list, YAML loading and
the pod-template helpers."""

from __future__ import annotations

import os
from typing import Any
import yaml


# deploy/k8scheck/common.py -> the repository root.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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

# Images that deploy/Dockerfile does not build, by full name (no tag): what each runs. They
# must be pinned to an exact version (x.y.z tag) or a digest, set no CROFT_* variables, and are
# probed by exec/tcpSocket instead of /healthz and /readyz.
THIRD_PARTY_IMAGES = {"docker.io/library/redis": "redis"}
# Redis, the control plane's shared state: the setting that names it, its port, and the
# workloads (app.kubernetes.io/name) its NetworkPolicy may admit: matchmaking keeps its state
# there; auth (rate limits) and connection (presence) are next.
REDIS_URL_ENV = "CROFT_REDIS_URL"
REDIS_PORT = 6379
REDIS_CLIENTS = {"matchmaking", "auth", "connection"}
# Settings that name another croft service by in-cluster URL (http://SERVICE.NAMESPACE.svc:PORT):
# every pod that sets one must be admitted by the NetworkPolicies of the pods behind it on that
# port and let out to them by its own, and that port admits nothing else but Prometheus
# (SCRAPER_NAMESPACES): auth's internal listener (the revocation feed) stays closed.
SERVICE_URL_ENVS = {"CROFT_AUTH_URL", "CROFT_MATCHMAKING_URL"}
SCRAPER_NAMESPACES = {"monitoring"}
# The binaries that follow auth's revocation feed and must be given its address (connection's
# default is localhost; an instance without one never drops a revoked session).
REVOCATION_FOLLOWERS = {"connection", "instance"}
# Workloads (app.kubernetes.io/name in namespace croft) that run at least two replicas and
# need a PodDisruptionBudget that lets a node drain proceed.
REPLICATED = {"auth", "matchmaking"}
# Allocators that work with several matchmaking replicas (the local one starts instance
# processes inside each replica's pod).
SHARED_ALLOCATORS = {"agones", "kubernetes"}


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


class RenderError(Exception):
    pass


def parse_image(ref: str) -> tuple[str, str | None, str | None]:
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    tag = None
    if ":" in ref.rsplit("/", 1)[-1]:
        ref, tag = ref.rsplit(":", 1)
    return ref, tag, digest


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


def third_party(c: dict) -> str | None:
    """What a container runs when its image is a THIRD_PARTY_IMAGES one, else None."""
    return THIRD_PARTY_IMAGES.get(parse_image(c.get("image", ""))[0])


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
