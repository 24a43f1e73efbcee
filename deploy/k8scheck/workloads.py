"""Pod templates: security settings, probes, resources, ports and the croft binaries they run."""

from __future__ import annotations

import re

from .common import (
    P, container_ports, find, ns_of, oid, parse_image, pod_templates, quantity, third_party,
)

PROBE_HANDLERS = ("httpGet", "exec", "tcpSocket", "grpc")


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
        # A StatefulSet's volumeClaimTemplates: persistent, writable, one claim per pod.
        claims = {}
        if owner.get("kind") == "StatefulSet":
            for t in owner["spec"].get("volumeClaimTemplates") or []:
                name = (t.get("metadata") or {}).get("name")
                claims[name] = t
                if not (((t.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage"):
                    P.add(f"{who}: volumeClaimTemplate {name} requests no storage")
                if name in volumes:
                    P.add(f"{who}: volumeClaimTemplate {name} is also a pod volume")
        containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
        if not spec.get("containers"):
            P.add(f"{who}: no containers")
        for c in containers:
            cw = f"{who} container {c.get('name')}"
            image = c.get("image", "")
            _, tag, digest = parse_image(image)
            if (not tag and not digest) or tag == "latest":
                P.add(f"{cw}: image {image!r} is not pinned to a tag or digest")
            elif third_party(c) and not digest and not re.fullmatch(r"\d+\.\d+\.\d+(?:-[A-Za-z0-9.]+)?", tag or ""):
                P.add(f"{cw}: image {image!r}: pin a third-party image to an exact version (x.y.z) or a digest")
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
            if cat != "job" and third_party(c):
                # Not croft's HTTP runtime: any probe handler, on a declared port if it names one.
                for k in ("livenessProbe", "readinessProbe"):
                    if not probes.get(k):
                        P.add(f"{cw}: no {k}")
                for k, pr in probes.items():
                    handlers = [h for h in PROBE_HANDLERS if h in (pr or {})]
                    if pr and len(handlers) != 1:
                        P.add(f"{cw}: {k} needs exactly one of {list(PROBE_HANDLERS)}")
                    port = ((pr or {}).get("tcpSocket") or (pr or {}).get("httpGet") or {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        P.add(f"{cw}: {k} port {port!r} is not a declared container port")
                    if isinstance(port, int) and port not in {p.get("containerPort") for p in ports.values()}:
                        P.add(f"{cw}: {k} port {port} is not a declared container port")
            elif cat != "job":
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
                if v is None and m.get("name") in claims:
                    continue  # a persistent volume of its own, writable by design
                if v is None:
                    P.add(f"{cw}: volumeMount {m.get('name')} has no volume")
                    continue
                if not m.get("readOnly"):
                    if "emptyDir" not in v:
                        P.add(f"{cw}: writable mount {m.get('mountPath')} is not an emptyDir")
                    elif not (v.get("emptyDir") or {}).get("sizeLimit"):
                        P.add(f"{cw}: emptyDir {m.get('name')} has no sizeLimit")
    return n
