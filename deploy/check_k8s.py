#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests in deploy/k8s (no cluster needed).

Run: python3 deploy/check_k8s.py   (scripts/check-deploy installs deploy/requirements.txt
first). Exit status 0 when everything passes; otherwise each problem is printed with the
overlay, object and field it concerns, and the status is 1.

(a) Listing. Every kustomization lists only files and directories that exist, and every file
    under deploy/k8s (YAML, the dashboard JSON, the SQL) is used by some kustomization: no
    orphans. Every component and the base are used by an overlay.
(b) Rendering. Each overlay is built by a small kustomize implementation (k8scheck/render.py)
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
    tokens are mounted only where a RoleBinding grants the ServiceAccount something. Images not
    built by deploy/Dockerfile (THIRD_PARTY_IMAGES: Redis) are pinned to an exact x.y.z tag or a
    digest, have liveness and readiness probes of any kind, and set no CROFT_* variables; a
    StatefulSet's volumeClaimTemplates are its only writable volumes besides emptyDirs.
Cross-checks with the rest of the repository:
  * every CROFT_* variable a container sets is accepted by that binary's clap config in the
    Rust sources, or listed as pending in deploy/rust-pending.yaml (and no pending entry exists
    in the sources yet), so CROFT_REDIS_URL is accepted where matchmaking reads it and nowhere
    else yet; the settings these checks interpret (CROFT_REDIS_URL, CROFT_ALLOCATOR, the
    listen addresses) are still flags of their binaries; the listen addresses bind 0.0.0.0 on
    the ports probes and Services use;
  * every metric in the alerts, the dashboard and the HPA is exported by the Rust code
    (counter!/gauge!/histogram!, process_* from telemetry) or pending;
  * Secrets referenced are the documented external ones (named in deploy/README.md) or
    operator-made; ConfigMaps and keys referenced exist in the render;
  * Services, NetworkPolicies, PDBs, HPAs, monitors select pods that exist and name ports
    those pods declare; in-cluster URLs name Services and ports that exist;
  * exposure: only the auth edge (TCP) and the connection/instance netcode sockets (UDP) are
    reachable from outside; every namespace denies ingress by default; only labelled
    services reach Postgres and Kafka;
  * replication: auth and matchmaking (REPLICATED) run >= 2 replicas, each with a
    PodDisruptionBudget selecting its pods that still allows a disruption; matchmaking with
    >= 2 replicas sets CROFT_REDIS_URL and uses the Agones or Kubernetes allocator;
  * Redis (no password): NetworkPolicies isolate its pods and admit only workloads named in
    REDIS_CLIENTS (matchmaking, auth, connection), by app.kubernetes.io/name, from its own
    namespace; every pod whose CROFT_REDIS_URL names it is admitted on its port and allowed
    there by its own egress policies;
  * service calls: every pod whose CROFT_AUTH_URL or CROFT_MATCHMAKING_URL (SERVICE_URL_ENVS)
    names an in-cluster Service is admitted by the policies of the pods behind it on that port
    and allowed there by its own egress policies; those ports admit only such callers and
    Prometheus (namespace monitoring), so auth's internal listener (the revocation feed for
    connection and instance servers) is closed to everything else; connection and instance
    servers (REVOCATION_FOLLOWERS) set CROFT_AUTH_URL;
  * the connection servers' replicas, per-pod Services, public IPs and the address list auth
    puts in connect tokens agree; KafkaTopics equal docs/events/*.schema.json; image names are
    Dockerfile targets; instance drain fits the termination grace period.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("check_k8s.py needs PyYAML: pip install --require-hashes -r deploy/requirements.txt")

from k8scheck.common import (
    BINARIES, DEPLOY, K8S, K8S_VERSION, OVERLAYS, P, RenderError, oid, parse_image, pod_templates,
    third_party,
)
from k8scheck.render import (
    build, check_listing, diff, key_of, kubectl_build, kubectl_kustomize_available,
)
from k8scheck.crds import check_crds, check_schemas
from k8scheck.workloads import check_workloads
from k8scheck.rust import (
    check_checked_env, check_pending_list, check_rust, load_pending, rust_metrics, rust_struct_envs,
)
from k8scheck.relations import (
    check_connection_public, check_external_secrets_documented, check_redis_access, check_relations,
    check_replicas, check_secrets_and_configmaps, check_service_access, check_topics, check_urls,
)


def dockerfile_targets() -> set[str]:
    text = open(os.path.join(DEPLOY, "Dockerfile"), encoding="utf-8").read()
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I)) - {"builder"}


def check_images(objs: list[dict]) -> None:
    targets = dockerfile_targets()
    for owner, tpl, _ in pod_templates(objs):
        for c in (tpl.get("spec") or {}).get("containers") or []:
            if third_party(c):
                continue  # pinned exactly (check_workloads)
            base = parse_image(c.get("image", ""))[0].rsplit("/", 1)[-1]
            if base not in targets:
                P.add(f"{oid(owner)}: image {c.get('image')} is not built by deploy/Dockerfile (targets {sorted(targets)}) "
                      "and is not one of THIRD_PARTY_IMAGES (k8scheck/common.py)")


# =============================================================================================
# Main
# =============================================================================================

def main() -> int:
    check_listing()
    pending = load_pending()
    metrics = rust_metrics()
    struct_envs = {b: rust_struct_envs(path, struct) for (b, path, struct) in BINARIES.values()}
    check_pending_list(pending, metrics, struct_envs)
    check_checked_env(struct_envs)
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
        check_replicas(objs)
        check_redis_access(objs)
        check_service_access(objs)
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
