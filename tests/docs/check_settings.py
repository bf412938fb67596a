#!/usr/bin/env python3
"""check_settings.py SOURCE_DIR

The settings the configuration loader accepts, against those the documentation lists:
  - the loader: every key compared in engine/config/*.c, with strcmp(k, "key") or
    strncmp(k, "prefix.", n) (k, or a CONF_VALUE's ->name, being the key read from the file);
    the file's first comment line names its section ("// The [certmintd] section: ...");
  - certmint.cnf(5): each "*key*" (or "*prefix.*_REF_") entry at the start of a line under the
    heading "# THE [SECTION] SECTION(S)" of docs/man/certmint.cnf.5.scd;
  - the README: the "key = value" lines of the ini block in its "## Configuration" section,
    under [certmintd], [ca:NAME], [profile:NAME] and [clients:NAME] (other sections are
    extension sections);
  - the example configuration packaging/certmint.cnf.in: every key it sets or shows in a
    comment must be one the loader accepts (it may leave settings out).
A setting the loader accepts that a document does not list fails ("undocumented"), and so does
one a document lists that the loader does not accept ("stale"). Exit 0 when all agree.
"""
import glob
import os
import re
import sys

KINDS = ("certmintd", "ca", "profile", "clients")
KEY_CALL = re.compile(r'\bstrn?cmp\(([^;"]*?),\s*"([^"]+)"')


def kind_of(section):
    """'ca:NAME' or 'ca NAME' -> 'ca'; 'certmintd' -> 'certmintd'; None for other sections."""
    kind = re.split(r"[: ]", section.strip(), maxsplit=1)[0]
    return kind if kind in KINDS else None


def loader_keys(src):
    """{kind: {key: 'file:line'}} from engine/config/*.c, plus a list of problems."""
    keys, problems = {k: {} for k in KINDS}, []
    for path in sorted(glob.glob(os.path.join(src, "engine", "config", "*.c"))):
        rel = os.path.relpath(path, src)
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        found = []
        for no, line in enumerate(lines, 1):
            for m in KEY_CALL.finditer(line):
                first = m.group(1).strip()
                if first == "k" or first.endswith("->name"):
                    found.append((m.group(2), no))
        if not found:
            continue
        head = re.search(r"\[([A-Za-z_]+)[:\] ]", lines[0]) if lines else None
        kind = kind_of(head.group(1)) if head else None
        if kind is None:
            problems.append(f"{rel}: compares configuration keys but its first comment line does "
                            f"not name a [certmintd], [ca:NAME], [profile:NAME] or [clients:NAME] "
                            f"section, so the test cannot tell where they belong")
            continue
        for key, no in found:
            keys[kind].setdefault(key, f"{rel}:{no}")
    return keys, problems


def man_keys(path):
    keys, kind = {k: {} for k in KINDS}, None
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            head = re.match(r"# THE \[([^\]]+)\] SECTIONS?\s*$", line)
            if head:
                kind = kind_of(head.group(1))
                continue
            if line.startswith("# "):
                kind = None
                continue
            m = re.match(r"\*([A-Za-z_][A-Za-z0-9_]*\.?)\*", line)
            if m and kind is not None:
                keys[kind].setdefault(m.group(1), f"{os.path.basename(path)}:{no}")
    return keys


def ini_keys(lines, name, commented):
    """Keys of an ini text by section kind. REF-suffixed keys (secret.line-7) become 'secret.'.
    With |commented|, '# key = value' lines count too (the example shows defaults that way)."""
    keys, kind = {k: {} for k in KINDS}, None
    for no, raw in lines:
        line = raw.strip()
        if commented and re.match(r"#\s*[A-Za-z_][A-Za-z0-9_.-]*\s*=", line):
            line = line.lstrip("#").strip()
        head = re.match(r"\[([^\]]+)\]", line)
        if head:
            kind = kind_of(head.group(1))
            continue
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(\.[A-Za-z0-9_.-]+)?\s*=", line)
        if m and kind is not None:
            key = m.group(1) + ("." if m.group(2) else "")
            keys[kind].setdefault(key, f"{name}:{no}")
    return keys


def readme_keys(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    out, in_section, in_block = [], False, False
    for no, line in enumerate(lines, 1):
        if line.startswith("## "):
            in_section = line.strip() == "## Configuration"
            continue
        if in_section and line.startswith("```"):
            if in_block:
                break
            in_block = line.strip() == "```ini"
            continue
        if in_section and in_block:
            out.append((no, line))
    return ini_keys(out, "README.md", False), bool(out)


def compare(name, loader, documented, problems):
    for kind in KINDS:
        for key, where in sorted(loader[kind].items()):
            if key not in documented[kind]:
                problems.append(f"undocumented: [{kind}] {key} (accepted at {where}) is missing "
                                f"from {name}")
        for key, where in sorted(documented[kind].items()):
            if key not in loader[kind]:
                problems.append(f"stale: [{kind}] {key} ({where}) is not a setting the loader "
                                f"accepts (engine/config/*.c)")


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    src = argv[1]
    loader, problems = loader_keys(src)
    total = sum(len(v) for v in loader.values())
    if total == 0:
        problems.append("found no configuration keys in engine/config/*.c: the loader's key "
                        "comparisons changed shape; update tests/docs/check_settings.py")
    man = man_keys(os.path.join(src, "docs", "man", "certmint.cnf.5.scd"))
    compare("docs/man/certmint.cnf.5.scd", loader, man, problems)
    readme, found = readme_keys(os.path.join(src, "README.md"))
    if not found:
        problems.append("README.md has no ```ini block in its '## Configuration' section")
    compare("README.md's Configuration section", loader, readme, problems)
    example = os.path.join(src, "packaging", "certmint.cnf.in")
    with open(example, encoding="utf-8") as f:
        ex = ini_keys(list(enumerate(f.read().splitlines(), 1)), "packaging/certmint.cnf.in",
                      True)
    for kind in KINDS:
        for key, where in sorted(ex[kind].items()):
            if key not in loader[kind]:
                problems.append(f"stale: [{kind}] {key} ({where}) is not a setting the loader "
                                f"accepts")
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s): document every setting in certmint.cnf(5) (with its "
              f"default, range and unit) and in the README's Configuration section")
        return 1
    print(f"settings: {total} accepted by the loader, all documented in certmint.cnf(5) and the "
          f"README; the example uses only those")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
