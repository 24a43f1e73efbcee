"""Cross-checks with the Rust sources: every setting, metric and subcommand the manifests use exists."""

from __future__ import annotations

import glob
import json
import math
import os
import re
import yaml

from .common import (
    DEPLOY, EXTERNAL_METRICS, EXTRA_ENV, MAX_CLIENTS_PER_SOCKET, P, REDIS_URL_ENV, REVOCATION_FOLLOWERS, ROOT,
    TELEMETRY_ADDR, binary_of, container_ports, env_map, find, oid, parse_image, pod_templates, rel, third_party,
)


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
        # Inline test modules only: `#[cfg(test)] mod tests;` declares a file of its own.
        text = re.split(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)[0]
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
            if third_party(c):
                for name in env_map(c):
                    if name.startswith("CROFT_"):
                        P.add(f"{cw}: env {name}: {third_party(c)} is not a croft binary")
                continue
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
            if binary in REVOCATION_FOLLOWERS and not env.get("CROFT_AUTH_URL"):
                P.add(f"{cw}: no CROFT_AUTH_URL: revoked sessions (logout, ban) would stay connected; "
                      "point it at auth's internal listener (auth-internal)")
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


def check_checked_env(struct_envs: dict) -> None:
    """The settings the checks themselves interpret are still flags of those binaries; otherwise
    a check would insist on a variable the binary ignores (a renamed flag, say)."""
    P.context = "rust"
    wanted: dict[str, set[str]] = {b: {env} for b, env in TELEMETRY_ADDR.items()}
    wanted["matchmaking"] |= {REDIS_URL_ENV, "CROFT_ALLOCATOR", "CROFT_INSTANCE_MAX_MATCHES"}
    for binary in REVOCATION_FOLLOWERS:
        wanted[binary] |= {"CROFT_AUTH_URL"}
    for binary, names in sorted(wanted.items()):
        for name in sorted(names - struct_envs.get(binary, set())):
            P.add(f"`{binary}` has no flag with env {name}, which check_k8s.py relies on: update k8scheck")
