#!/usr/bin/env python3
"""Checks that the no_std runtime's top-level modules import one way.

Every `crate::` reference outside tests (`#[cfg(test)]` items and the `tests.rs` files they
include) is attributed to the top-level module of the file it appears in, and must point to a
module in a strictly lower layer of LAYERS (or to the same module). Root re-exports
(`crate::Error`, `crate::Model`, ...) count as the module they come from.

Run from anywhere: `python3 scripts/check-layers.py` (exit 1 and the offending lines on a
violation; `--graph` prints the whole module graph).
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "runtime" / "src"

# Lowest first. A module may use only modules of earlier layers (and itself).
LAYERS = [
    ["error", "crc", "io"],
    ["rng", "time"],
    ["grid"],
    ["method"],
    ["ops"],
    ["linked"],
    ["format"],
    ["ir"],
    ["plan"],
    ["model"],
    ["write"],
    ["select"],
    ["field"],
    ["exec"],
    ["solver"],
    ["guidance", "fewstep", "sde"],
    ["run"],
    ["sampler"],
    ["pipeline", "calibrate"],
]

# Names re-exported at the crate root, and the module they come from.
ROOT_EXPORTS = {}


def layer_of(module):
    for i, layer in enumerate(LAYERS):
        if module in layer:
            return i
    return None


def strip_tests(text):
    """Drops `#[cfg(test)]` items (a `mod x;` line or a braced block)."""
    out = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("#[cfg(test)]"):
            # Skip the attribute and the item after it.
            i += 1
            depth = 0
            started = False
            while i < len(lines):
                l = lines[i]
                depth += l.count("{") - l.count("}")
                if "{" in l:
                    started = True
                i += 1
                if (started and depth <= 0) or (not started and l.rstrip().endswith(";")):
                    break
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def use_targets(text):
    """Top-level names referenced through `crate::` (handles `use crate::{a, b::c}`)."""
    names = []
    for m in re.finditer(r"crate::\{([^}]*(?:\{[^}]*\}[^}]*)*)\}", text):
        for part in m.group(1).split(","):
            part = part.strip()
            if part:
                names.append(re.split(r"::|\s", part)[0])
    for m in re.finditer(r"crate::([A-Za-z_][A-Za-z0-9_]*)", text):
        names.append(m.group(1))
    return names


def root_exports():
    lib = strip_comments((ROOT / "lib.rs").read_text())
    exports = {}
    for m in re.finditer(r"pub use ([a-z_]+)::(\{[^}]*\}|[A-Za-z_]+)", lib):
        module, items = m.group(1), m.group(2)
        for item in items.strip("{}").split(","):
            item = item.strip()
            if item:
                exports[item] = module
    return exports


def module_of(path):
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".rs")


def main():
    exports = root_exports()
    edges = {}
    for path in sorted(ROOT.rglob("*.rs")):
        if path.name == "tests.rs" or path.name == "lib.rs":
            continue
        src = module_of(path)
        text = strip_tests(strip_comments(path.read_text()))
        for name in use_targets(text):
            dst = exports.get(name, name)
            if dst in ("self", "super") or dst == src:
                continue
            if not (ROOT / f"{dst}.rs").exists() and not (ROOT / dst).is_dir():
                continue  # a macro or item defined in lib.rs
            edges.setdefault((src, dst), set()).add(str(path.relative_to(ROOT.parent.parent)))
    bad = []
    for (src, dst), files in sorted(edges.items()):
        ls, ld = layer_of(src), layer_of(dst)
        if ls is None or ld is None:
            bad.append(f"{src} -> {dst}: module not in LAYERS of scripts/check-layers.py ({', '.join(sorted(files))})")
        elif ld >= ls:
            bad.append(f"{src} (layer {ls}) -> {dst} (layer {ld}) in {', '.join(sorted(files))}")
    if "--graph" in sys.argv:
        for (src, dst) in sorted(edges):
            print(f"{src} -> {dst}")
    if bad:
        print("runtime module layering violated (lower layers must not import higher ones):")
        for b in bad:
            print("  " + b)
        sys.exit(1)
    print(f"runtime layering ok: {len(edges)} imports between {len({s for s, _ in edges} | {d for _, d in edges})} modules, all downward")


if __name__ == "__main__":
    main()
