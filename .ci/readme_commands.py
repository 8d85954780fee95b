"""Print the quick-start commands of README.md, one per line (used by .ci/run).

The quick start is the first ```bash fenced block after a heading containing "Quick start".
Lines ending in a backslash are joined; comment lines are skipped.
"""

import sys

with open(sys.argv[1], encoding="utf-8") as f:
    lines = f.read().splitlines()
i = next(n for n, line in enumerate(lines) if line.startswith("#") and "Quick start" in line)
i = next(n for n in range(i, len(lines)) if lines[n].strip().startswith("```"))
cmds, cur = [], ""
for line in lines[i + 1 :]:
    if line.strip().startswith("```"):
        break
    s = line.strip()
    if not s or s.startswith("#"):
        continue
    cur += s[:-1] + " " if s.endswith("\\") else s
    if not s.endswith("\\"):
        cmds.append(cur.strip())
        cur = ""
print("\n".join(cmds))
