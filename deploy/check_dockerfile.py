#!/usr/bin/env python3
"""Offline review of deploy/Dockerfile (there is no Docker engine to build it here).

Parses the Dockerfile into stages and checks:
  * every base image is pinned: an explicit tag or digest, never `latest`; the Rust builder's
    tag carries a full x.y.z version equal to the workspace's rust-version;
  * the final stages are exactly the targets croft, server-connection and server-instance,
    each on a distroless or slim base, running as `nonroot` or a numeric non-zero uid, with an
    ENTRYPOINT in exec (JSON array) form naming the binary that stage copies in;
  * every COPY --from names an earlier stage (no numeric indexes, no external images);
  * the build runs `cargo build --release --locked` with -p for exactly the three packages, and
    those names are workspace packages whose [[bin]] targets produce the copied binaries;
  * the stages whose binary reads card data (croft, server-instance) copy assets/cards where
    their default --cards path (or CROFT_CARDS) points; assets/cards exists;
  * no `latest` tag anywhere, no ADD of remote URLs, no `curl | sh`;
  * /.dockerignore exists, keeps target/, .git, data and keys out, and lets in every path the
    Dockerfile COPYs from the build context.
Exit status 0 when all pass; otherwise every problem is printed and the status is 1.
Standard library only.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import sys
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(ROOT, "deploy", "Dockerfile")
DOCKERIGNORE = os.path.join(ROOT, ".dockerignore")

# target stage -> (cargo package, binary name, reads card data)
TARGETS = {
    "croft": ("croft", "croft", True),
    "server-connection": ("server-connection", "server-connection", False),
    "server-instance": ("server-instance", "server-instance", True),
}
RUNTIME_BASE = re.compile(r"^(gcr\.io/distroless/[a-z0-9.-]+|([a-z0-9.-]+/)*[a-z0-9.-]*slim[a-z0-9.-]*)(:[^@]+)?(@sha256:[0-9a-f]{64})?$")


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass
class Stage:
    index: int
    image: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)


def parse(text: str) -> tuple[list[Instruction], list[Stage]]:
    """Dockerfile syntax: comments, parser directives, backslash continuations."""
    instructions: list[Instruction] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        raw = lines[i]
        start = i + 1
        i += 1
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = [raw]
        while parts[-1].rstrip().endswith("\\") and i < len(lines):
            parts[-1] = parts[-1].rstrip()[:-1]
            nxt = lines[i]
            i += 1
            if nxt.strip().startswith("#"):
                parts.append("")
                continue
            parts.append(nxt)
        joined = " ".join(p.strip() for p in parts if p.strip())
        keyword, _, args = joined.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = None
            if len(words) >= 3 and words[1].lower() == "as":
                name = words[2]
            stages.append(Stage(len(stages), words[0] if words else "", name, ins.line))
        elif stages:
            stages[-1].instructions.append(ins)
    return instructions, stages


def image_tag(image: str) -> tuple[str, str | None, str | None]:
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = None
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        image, tag = image.rsplit(":", 1)
    return image, tag, digest


def workspace_rust_version() -> str | None:
    text = open(os.path.join(ROOT, "Cargo.toml"), encoding="utf-8").read()
    m = re.search(r'^rust-version\s*=\s*"([^"]+)"', text, re.M)
    return m.group(1) if m else None


def workspace_packages() -> dict[str, dict]:
    """package name -> {dir, bins}"""
    text = open(os.path.join(ROOT, "Cargo.toml"), encoding="utf-8").read()
    members = re.search(r"members\s*=\s*\[(.*?)\]", text, re.S)
    out = {}
    for member in re.findall(r'"([^"]+)"', members.group(1) if members else ""):
        manifest = open(os.path.join(ROOT, member, "Cargo.toml"), encoding="utf-8").read()
        pkg = re.search(r'^\[package\]\s*\nname\s*=\s*"([^"]+)"', manifest, re.M)
        if not pkg:
            continue
        bins = re.findall(r'^\[\[bin\]\]\s*\nname\s*=\s*"([^"]+)"', manifest, re.M)
        if not bins and os.path.exists(os.path.join(ROOT, member, "src", "main.rs")):
            bins = [pkg.group(1)]
        out[pkg.group(1)] = {"dir": member, "bins": bins}
    return out


def dockerignore_allows(patterns: list[str], path: str) -> bool:
    """Docker's rules: last matching pattern wins; `!` re-includes; a directory's exclusion
    covers what is below it."""
    allowed = True
    parts = path.strip("/").split("/")
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if fnmatch.fnmatchcase(prefix, p) or (p.startswith("**/") and any(
                fnmatch.fnmatchcase("/".join(parts[k:depth]), p[3:]) for k in range(depth)
            )):
                allowed = neg
                break
    return allowed


def main() -> int:
    errors: list[str] = []
    text = open(DOCKERFILE, encoding="utf-8").read()
    instructions, stages = parse(text)
    names = {s.name: s for s in stages if s.name}

    # No `latest`, no remote ADD, no piping downloads into a shell.
    for ins in instructions:
        if re.search(r":latest\b", ins.args):
            errors.append(f"line {ins.line}: `latest` tag")
        if ins.keyword == "ADD" and re.search(r"https?://", ins.args):
            errors.append(f"line {ins.line}: ADD of a remote URL (download in a RUN with a checksum)")
        if ins.keyword == "RUN" and re.search(r"(curl|wget)[^|]*\|\s*(ba)?sh", ins.args):
            errors.append(f"line {ins.line}: download piped into a shell")

    # Every base image pinned.
    rust_version = workspace_rust_version()
    for st in stages:
        if st.image in names:
            continue  # FROM an earlier stage
        repo, tag, digest = image_tag(st.image)
        if not tag and not digest:
            errors.append(f"line {st.line}: base image {st.image} has neither tag nor digest")
        if tag == "latest":
            errors.append(f"line {st.line}: base image {st.image} uses latest")
        if repo.endswith("/rust") or repo == "rust":
            m = re.match(r"(\d+\.\d+\.\d+)", tag or "")
            if not m:
                errors.append(f"line {st.line}: the Rust image tag must carry a full x.y.z version")
            elif rust_version and not m.group(1).startswith(rust_version):
                errors.append(f"line {st.line}: Rust {m.group(1)} but Cargo.toml says rust-version {rust_version}")

    # COPY --from names an earlier stage.
    for st in stages:
        earlier = {s.name for s in stages[: st.index] if s.name}
        for ins in st.instructions:
            if ins.keyword != "COPY":
                continue
            m = re.search(r"--from=(\S+)", ins.args)
            if m and m.group(1) not in earlier:
                errors.append(
                    f"line {ins.line}: COPY --from={m.group(1)} does not name an earlier stage "
                    f"(stages before it: {sorted(earlier) or 'none'})"
                )

    # The cargo build.
    packages = workspace_packages()
    builds = [ins for ins in instructions if ins.keyword == "RUN" and "cargo build" in ins.args]
    if len(builds) != 1:
        errors.append(f"expected one RUN with `cargo build`, found {len(builds)}")
    else:
        cmd = builds[0].args
        cmd = cmd[cmd.index("cargo build"):].split("&&")[0]
        for flag in ("--release", "--locked"):
            if flag not in cmd.split():
                errors.append(f"line {builds[0].line}: cargo build without {flag}")
        built = set(re.findall(r"(?:^|\s)-p\s+(\S+)", cmd))
        want = {pkg for pkg, _, _ in TARGETS.values()}
        if built != want:
            errors.append(f"line {builds[0].line}: cargo build -p {sorted(built)}, expected {sorted(want)}")
        for pkg in built:
            if pkg not in packages:
                errors.append(f"cargo package {pkg} is not a workspace member (have {sorted(packages)})")

    # Final stages.
    final = [s for s in stages if s.name in TARGETS]
    if {s.name for s in final} != set(TARGETS):
        errors.append(f"final stages {sorted(s.name for s in final)}, expected {sorted(TARGETS)}")
    for st in final:
        pkg, binary, cards = TARGETS[st.name]
        where = f"stage {st.name} (line {st.line})"
        if not RUNTIME_BASE.match(st.image):
            errors.append(f"{where}: base {st.image} is not a distroless or slim image")
        users = [i for i in st.instructions if i.keyword == "USER"]
        if not users:
            errors.append(f"{where}: no USER (would run as the image's default user)")
        else:
            user = users[-1].args.split(":")[0]
            if not (user == "nonroot" or (user.isdigit() and int(user) != 0)):
                errors.append(f"{where}: USER {users[-1].args} is neither nonroot nor a numeric non-zero uid")
        entry = [i for i in st.instructions if i.keyword == "ENTRYPOINT"]
        if not entry:
            errors.append(f"{where}: no ENTRYPOINT")
        else:
            try:
                argv = json.loads(entry[-1].args)
                if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
                    raise ValueError
            except ValueError:
                errors.append(f"{where}: ENTRYPOINT is not in exec (JSON array) form: {entry[-1].args}")
                argv = []
            if argv and os.path.basename(argv[0]) != binary:
                errors.append(f"{where}: ENTRYPOINT runs {argv[0]}, expected the {binary} binary")
        if pkg in packages and binary not in packages[pkg]["bins"]:
            errors.append(f"{where}: package {pkg} builds {packages[pkg]['bins']}, not {binary}")
        copies = [i for i in st.instructions if i.keyword == "COPY"]
        if not any("--from=" in c.args and re.search(rf"/{re.escape(binary)}\s", c.args + " ") for c in copies):
            errors.append(f"{where}: does not COPY the {binary} binary from the builder")
        if cards:
            workdir = next((i.args for i in reversed(st.instructions) if i.keyword == "WORKDIR"), "/")
            env_cards = None
            for i in st.instructions:
                if i.keyword == "ENV":
                    m = re.search(r"CROFT_CARDS=(\S+)", i.args)
                    if m:
                        env_cards = m.group(1)
            cards_dir = env_cards or os.path.join(workdir, "assets/cards")
            if not any(c.args.split()[-1].rstrip("/") == cards_dir.rstrip("/") and "assets/cards" in c.args for c in copies):
                errors.append(f"{where}: card data is read from {cards_dir} but no COPY of assets/cards puts it there")

    # What the builder copies from the context exists and gets through .dockerignore.
    if not os.path.isdir(os.path.join(ROOT, "assets", "cards")):
        errors.append("assets/cards is missing")
    if not os.path.exists(DOCKERIGNORE):
        errors.append(".dockerignore is missing at the repository root")
    else:
        patterns = [
            l.strip() for l in open(DOCKERIGNORE, encoding="utf-8")
            if l.strip() and not l.strip().startswith("#")
        ]
        for ins in instructions:
            if ins.keyword != "COPY" or "--from=" in ins.args:
                continue
            for src in [w for w in ins.args.split() if not w.startswith("--")][:-1]:
                if not os.path.exists(os.path.join(ROOT, src)):
                    errors.append(f"line {ins.line}: COPY {src}: no such path in the repository")
                elif not dockerignore_allows(patterns, src):
                    errors.append(f"line {ins.line}: COPY {src}: excluded by .dockerignore")
        # cargo loads every workspace member's manifest, even for `-p croft`: each member's
        # folder must be copied into the builder.
        copied = []
        for ins in instructions:
            if ins.keyword == "COPY" and "--from=" not in ins.args:
                copied += [w.rstrip("/") for w in ins.args.split() if not w.startswith("--")][:-1]
        for pkg, info in workspace_packages().items():
            member = info["dir"]
            if not any(member == c or member.startswith(c + "/") for c in copied):
                errors.append(f"workspace member {member} ({pkg}) is not copied into the builder: cargo cannot load the workspace")
        for must_exclude in ("target", ".git", ".ci", "data", "deploy/k8s", "services/auth/target",
                             "data/netcode.key", "x/jwt.key"):
            if dockerignore_allows(patterns, must_exclude):
                errors.append(f".dockerignore lets {must_exclude} into the build context")

    if errors:
        print("deploy/Dockerfile: FAILED")
        for e in errors:
            print(f"  - {e}")
        return 1
    print(
        f"deploy/Dockerfile: ok ({len(stages)} stages; targets {', '.join(sorted(TARGETS))}; "
        f"bases pinned; non-root; exec-form entrypoints)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
