"""(a) and (b): the kustomization listing and the small kustomize implementation that renders each
overlay (compared with `kubectl kustomize` when kubectl is there)."""

from __future__ import annotations

import copy
import glob
import json
import os
import re
import shutil
import subprocess
from typing import Any
import yaml

from .common import (
    K8S, OVERLAYS, P, RenderError, kustomization_file, load_docs, oid, parse_image,
    read_kustomization, rel,
)


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
