"""How the objects refer to each other: Secrets and ConfigMaps, selectors, Services, URLs, the
connection servers' public addresses, and the Kafka topics."""

from __future__ import annotations

import glob
import ipaddress
import math
import os
import re

from .common import (
    CLUSTER_SCOPED, DEPLOY, EXTERNAL_NAMESPACES, EXTERNAL_SECRETS, MAX_CLIENTS_PER_SOCKET,
    NAMESPACES, OPERATOR_POD_LABELS, OPERATOR_SECRETS, P, REDIS_CLIENTS, REDIS_PORT, REDIS_URL_ENV,
    REPLICATED, ROOT, SCRAPER_NAMESPACES, SERVICE_URL_ENVS, SHARED_ALLOCATORS, binary_of, container_ports,
    env_map, find, labels_match, ns_of, oid, pod_templates, pods_in, selector_keys, third_party,
)


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


def pod_labels(tpl: dict) -> dict:
    return (tpl.get("metadata") or {}).get("labels") or {}


def check_replicas(objs: list[dict]) -> None:
    """auth and matchmaking run at least two replicas, each workload with a PodDisruptionBudget
    that still lets a node drain go on; several matchmaking replicas need the shared state in
    Redis and an allocator that is not the in-pod one."""
    for name in sorted(REPLICATED):
        owners = [(o, t) for o, t, _ in pods_in(objs, "croft")
                  if o.get("kind") in ("Deployment", "StatefulSet") and pod_labels(t).get("app.kubernetes.io/name") == name]
        if not owners:
            P.add(f"no Deployment or StatefulSet runs {name} in namespace croft")
        for o, t in owners:
            n = o["spec"].get("replicas", 1)
            if n < 2:
                P.add(f"{oid(o)}: {n} replica(s); {name} must run at least 2 (REPLICATED in k8scheck/common.py)")
            pdbs = [p for p in objs if p.get("kind") == "PodDisruptionBudget" and ns_of(p) == ns_of(o)
                    and labels_match(p["spec"].get("selector"), pod_labels(t))]
            if not pdbs:
                P.add(f"{oid(o)}: no PodDisruptionBudget selects its pods (a node drain may evict every {name} replica at once)")
            for p in pdbs:
                lo, hi = p["spec"].get("minAvailable"), p["spec"].get("maxUnavailable")
                if (isinstance(lo, int) and lo >= n) or lo == "100%" or hi in (0, "0%"):
                    P.add(f"{oid(p)}: allows no disruption of {oid(o)}'s {n} replica(s): every node drain would block")
    for o, t, _ in pod_templates(objs):
        for c in (t.get("spec") or {}).get("containers") or []:
            if binary_of(c) != "matchmaking":
                continue
            n = (o.get("spec") or {}).get("replicas", 1)
            env = env_map(c)
            if n >= 2 and not env.get(REDIS_URL_ENV):
                P.add(f"{oid(o)}: {n} replicas without {REDIS_URL_ENV}: each would keep its own queue, matches and "
                      "mailboxes in memory (a split queue, lost match updates); point it at Redis")
            allocator = env.get("CROFT_ALLOCATOR", "local")
            if n >= 2 and allocator not in SHARED_ALLOCATORS:
                P.add(f"{oid(o)}: {n} replicas with the {allocator} allocator, which starts instance processes in "
                      f"each replica's pod; use one of {sorted(SHARED_ALLOCATORS)} (an instances-* component)")


def named_workloads(selector: dict | None) -> set[str] | None:
    """The app.kubernetes.io/name values a pod selector is limited to, or None if it names none."""
    selector = selector or {}
    names = None
    value = (selector.get("matchLabels") or {}).get("app.kubernetes.io/name")
    if value is not None:
        names = {value}
    for e in selector.get("matchExpressions") or []:
        if e.get("key") == "app.kubernetes.io/name" and e.get("operator") == "In":
            values = set(e.get("values") or [])
            names = values if names is None else names & values
    return names


def peer_allows(rule: dict, key: str, own_ns: str, peer_ns: str, peer_labels: dict, port: int, port_name: str) -> bool:
    """Whether an ingress (key `from`) or egress (key `to`) rule of a policy in own_ns lets the
    pod peer_labels in peer_ns through on TCP port (named port_name on the receiving pod)."""
    peers = rule.get(key)
    ok = not peers
    for peer in peers or []:
        if "ipBlock" in peer:
            continue
        ns = own_ns
        if "namespaceSelector" in peer:
            ns = (peer["namespaceSelector"].get("matchLabels") or {}).get("kubernetes.io/metadata.name", peer_ns)
        if ns == peer_ns and labels_match(peer.get("podSelector"), peer_labels):
            ok = True
    return ok and rule_covers(rule, port, port_name)


def rule_covers(rule: dict, port: int, port_name: str) -> bool:
    """Whether a policy rule's ports include TCP port (named port_name on the receiving pod)."""
    ports = rule.get("ports")
    return not ports or any(
        pt.get("protocol", "TCP") == "TCP" and (
            pt.get("port") is None or pt.get("port") == port_name
            or (isinstance(pt.get("port"), int) and pt["port"] <= port <= pt.get("endPort", pt["port"])))
        for pt in ports)


def policies_selecting(objs: list[dict], ns: str, labels: dict, direction: str) -> list[dict]:
    """The NetworkPolicies of namespace ns that govern direction (Ingress or Egress) of the pod labels."""
    out = []
    for np in objs:
        if np.get("kind") != "NetworkPolicy":
            continue
        types = np["spec"].get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in np["spec"] else []))
        if ns_of(np) == ns and direction in types and labels_match(np["spec"].get("podSelector"), labels):
            out.append(np)
    return out


def redis_behind(objs: list[dict], url: str) -> tuple[list[tuple[dict, dict]], int, str] | None:
    """The Redis pod templates an in-cluster URL (redis://SERVICE.NAMESPACE.svc:PORT) reaches, with
    their container port and its name; None for an address outside the render."""
    m = re.match(r"rediss?://(?:[^@/]*@)?([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?(?::(\d+))?", url)
    svc = find(objs, "Service", m.group(1), m.group(2)) if m else None
    if not svc:
        return None  # outside the cluster (a managed Redis), or a missing Service (check_urls)
    port = int(m.group(3) or REDIS_PORT)
    target = next((p.get("targetPort", port) for p in svc["spec"].get("ports") or [] if p.get("port") == port), port)
    sel = {"matchLabels": svc["spec"].get("selector") or {}}
    pods = [(o, t) for o, t, _ in pods_in(objs, ns_of(svc)) if labels_match(sel, pod_labels(t))
            and any(third_party(c) == "redis" for c in (t.get("spec") or {}).get("containers") or [])]
    for o, t in pods:
        for cp in container_ports(t, o):
            if target in (cp.get("name"), cp.get("containerPort")):
                return pods, cp["containerPort"], cp.get("name") or ""
    return pods, port, ""


def check_redis_access(objs: list[dict]) -> None:
    """Redis has no password: NetworkPolicies must isolate it, admit only the workloads in
    REDIS_CLIENTS (by name, from its own namespace), and let every pod that uses it (sets
    CROFT_REDIS_URL to it) through, in and out."""
    redis = [(o, t) for o, t, _ in pod_templates(objs)
             if any(third_party(c) == "redis" for c in (t.get("spec") or {}).get("containers") or [])]
    for o, t in redis:
        ns, labels = ns_of(o), pod_labels(t)
        guards = policies_selecting(objs, ns, labels, "Ingress")
        admitted: set[str] = set()
        for np in guards:
            for rule in np["spec"].get("ingress") or []:
                if not rule.get("from"):
                    P.add(f"{oid(np)}: an ingress rule without `from` opens Redis ({oid(o)}) to every pod and address")
                    continue
                for peer in rule["from"]:
                    if "ipBlock" in peer or "namespaceSelector" in peer:
                        P.add(f"{oid(np)}: Redis peer {peer}: only pods of namespace {ns}, named by app.kubernetes.io/name")
                        continue
                    names = named_workloads(peer.get("podSelector"))
                    if names is None:
                        P.add(f"{oid(np)}: Redis peer {peer.get('podSelector')} does not name workloads "
                              "(app.kubernetes.io/name in matchLabels or an In expression)")
                        continue
                    if names - REDIS_CLIENTS:
                        P.add(f"{oid(np)}: admits {sorted(names - REDIS_CLIENTS)} to Redis; only {sorted(REDIS_CLIENTS)} "
                              "may reach it (REDIS_CLIENTS in k8scheck/common.py)")
                    admitted |= names & REDIS_CLIENTS
        if not guards or not admitted:
            P.add(f"{oid(o)}: no NetworkPolicy restricts Redis ingress to the workloads {sorted(REDIS_CLIENTS)}")
    # Every pod that uses an in-cluster Redis gets there: admitted by Redis, allowed out by its own policies.
    for o, t, _ in pod_templates(objs):
        url = next((env_map(c).get(REDIS_URL_ENV) for c in (t.get("spec") or {}).get("containers") or []
                    if env_map(c).get(REDIS_URL_ENV)), None)
        target = redis_behind(objs, url) if url else None
        if not target:
            continue
        pods, port, port_name = target
        if not pods:
            P.add(f"{oid(o)}: {REDIS_URL_ENV}={url} names a Service with no Redis pods behind it")
        for ro, rt in pods:
            rns, rlabels, ons, olabels = ns_of(ro), pod_labels(rt), ns_of(o), pod_labels(t)
            if not any(peer_allows(rule, "from", rns, ons, olabels, port, port_name)
                       for np in policies_selecting(objs, rns, rlabels, "Ingress") for rule in np["spec"].get("ingress") or []):
                P.add(f"{oid(o)}: uses Redis ({REDIS_URL_ENV}) but no NetworkPolicy admits it to {oid(ro)} on TCP {port}")
            out = policies_selecting(objs, ons, olabels, "Egress")
            if out and not any(peer_allows(rule, "to", ons, rns, rlabels, port, port_name)
                               for np in out for rule in np["spec"].get("egress") or []):
                P.add(f"{oid(o)}: uses Redis ({REDIS_URL_ENV}) but its egress policies "
                      f"({', '.join(np['metadata']['name'] for np in out)}) do not allow {oid(ro)} on TCP {port}")


def service_behind(objs: list[dict], url: str) -> list[tuple[dict, dict, int, str]] | None:
    """The pod templates an in-cluster URL (http://SERVICE.NAMESPACE.svc:PORT) reaches, each with
    its container port and that port's name; None for an address outside the render."""
    m = re.match(r"(https?)://([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?(?::(\d+))?(?:/|$)", url)
    svc = find(objs, "Service", m.group(2), m.group(3)) if m else None
    if not svc:
        return None  # outside the cluster, or a missing Service (check_urls)
    port = int(m.group(4) or (443 if m.group(1) == "https" else 80))
    target = next((p.get("targetPort", port) for p in svc["spec"].get("ports") or [] if p.get("port") == port), None)
    if target is None:
        return None  # no such port on the Service (check_urls)
    sel = {"matchLabels": svc["spec"].get("selector") or {}}
    out = []
    for o, t, _ in pods_in(objs, ns_of(svc)):
        if not labels_match(sel, pod_labels(t)):
            continue
        cp = next((cp for cp in container_ports(t, o) if target in (cp.get("name"), cp.get("containerPort"))), None)
        if cp:
            out.append((o, t, cp["containerPort"], cp.get("name") or ""))
    return out


def check_service_access(objs: list[dict]) -> None:
    """Pods that call a croft service by an in-cluster URL (SERVICE_URL_ENVS: CROFT_AUTH_URL,
    CROFT_MATCHMAKING_URL) are admitted by the NetworkPolicies of the pods behind it on that port
    and let out to them by their own; and each such port admits only those callers and the
    SCRAPER_NAMESPACES (Prometheus), so auth's internal listener (the revocation feed, unauthenticated)
    stays closed to every other pod and address."""
    targets: dict[tuple[str, int], tuple[dict, dict, str, set[str]]] = {}
    for o, t, _ in pod_templates(objs):
        for c in (t.get("spec") or {}).get("containers") or []:
            for name, url in sorted(env_map(c).items()):
                if name not in SERVICE_URL_ENVS:
                    continue
                behind = service_behind(objs, url)
                if behind is None:
                    continue
                if not behind:
                    P.add(f"{oid(o)}: {name}={url} names a Service with no pods declaring its target port behind it")
                for to, tt, port, port_name in behind:
                    tns, tlabels, ons, olabels = ns_of(to), pod_labels(tt), ns_of(o), pod_labels(t)
                    targets.setdefault((oid(to), port), (to, tt, port_name, set()))[3].add(oid(o))
                    if not any(peer_allows(rule, "from", tns, ons, olabels, port, port_name)
                               for np in policies_selecting(objs, tns, tlabels, "Ingress")
                               for rule in np["spec"].get("ingress") or []):
                        P.add(f"{oid(o)}: {name}={url} but no NetworkPolicy admits it to {oid(to)} on TCP {port}")
                    out = policies_selecting(objs, ons, olabels, "Egress")
                    if out and not any(peer_allows(rule, "to", ons, tns, tlabels, port, port_name)
                                       for np in out for rule in np["spec"].get("egress") or []):
                        P.add(f"{oid(o)}: {name}={url} but its egress policies "
                              f"({', '.join(np['metadata']['name'] for np in out)}) do not allow {oid(to)} on TCP {port}")
    # Those ports admit their callers and Prometheus, nothing else.
    for (_, port), (to, tt, port_name, callers) in sorted(targets.items(), key=lambda kv: kv[0]):
        tns = ns_of(to)
        for np in policies_selecting(objs, tns, pod_labels(tt), "Ingress"):
            for rule in np["spec"].get("ingress") or []:
                if not rule_covers(rule, port, port_name):
                    continue
                if not rule.get("from"):
                    P.add(f"{oid(np)}: an ingress rule without `from` opens {oid(to)} TCP {port} to every pod and address")
                    continue
                for peer in rule["from"]:
                    if "ipBlock" in peer:
                        P.add(f"{oid(np)}: ipBlock peer on {oid(to)} TCP {port}: only its callers and Prometheus may reach it")
                        continue
                    pns = tns
                    if "namespaceSelector" in peer:
                        pns = (peer["namespaceSelector"].get("matchLabels") or {}).get("kubernetes.io/metadata.name")
                    if pns in SCRAPER_NAMESPACES:
                        continue
                    if pns not in NAMESPACES:
                        P.add(f"{oid(np)}: admits namespace {pns or peer['namespaceSelector']} to {oid(to)} TCP {port}; "
                              f"only pods whose {'/'.join(sorted(SERVICE_URL_ENVS))} name it and {sorted(SCRAPER_NAMESPACES)} may")
                        continue
                    others = sorted(oid(po) for po, pt, _ in pods_in(objs, pns)
                                    if labels_match(peer.get("podSelector"), pod_labels(pt)) and oid(po) not in callers)
                    if others:
                        P.add(f"{oid(np)}: admits {others} to {oid(to)} TCP {port}, which they do not call "
                              f"(no {'/'.join(sorted(SERVICE_URL_ENVS))} names it); only {sorted(callers)} and "
                              f"{sorted(SCRAPER_NAMESPACES)} may reach it")


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
