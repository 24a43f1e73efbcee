"""(c) and (d): Kubernetes schemas for built-in kinds, and the custom resources (Agones, Strimzi,
CloudNativePG, Prometheus operator) checked field by field."""

from __future__ import annotations

import re
from typing import Any, Iterable

from .common import (
    BUILTIN_GROUPS, K8S_VERSION, OPERATOR_POD_LABELS, P, container_ports, find, labels_match, ns_of,
    oid, parse_image, pod_templates, pods_in, selector_keys,
)
from .render import split_api


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
