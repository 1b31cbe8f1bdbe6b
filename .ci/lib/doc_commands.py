#!/usr/bin/env python3
"""Lists the commands of the docs' `sh` blocks for .ci/steps/docs.sh.

Every fenced ```sh block must be preceded by a marker comment:
  <!-- ci: run -->            each command line of the block is run as written
  <!-- ci: skip: REASON -->   not run (it changes a cluster, a registry, a node)
A block without a marker is an error: every command in the docs is either run
or says why not. Prints one JSON object per block: file, line, run, reason, commands.
"""
import json
import re
import sys

marker = re.compile(r"<!--\s*ci:\s*(run|skip)(?::\s*(.*?))?\s*-->")
errors = []
for path in sys.argv[1:]:
    lines = open(path, encoding="utf-8").read().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            start = i
            prev = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            m = marker.fullmatch(prev)
            body = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            if not m:
                errors.append(f"{path}:{start + 1}: sh block without <!-- ci: run --> or <!-- ci: skip: why -->")
            else:
                commands = [l.strip() for l in body if l.strip() and not l.strip().startswith("#")]
                if any(c.endswith("\\") for c in commands) and m.group(1) == "run":
                    errors.append(f"{path}:{start + 1}: a ci: run block with a continued line")
                print(json.dumps({"file": path, "line": start + 1, "run": m.group(1) == "run",
                                  "reason": m.group(2) or "", "commands": commands}))
        i += 1
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
