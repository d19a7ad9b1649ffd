"""Names the tests a CTest run skipped, grouped by reason, from its JUnit report.

    python3 tests/skipped_tests.py REPORT.xml [LABEL]

CTest's own summary lists skipped tests but not why. Reasons come from each test's output: a
GoogleTest skip ("file.cpp:N: Skipped" then the message), or a script's "SKIP: ..." / "skip: ..."
line (exit 77). Prints, e.g., "25 CUDA tests skipped: no GPU visible: CUDA backend not exercised",
or "no test skipped". Exit status 0 either way; launch/test.sh prints this for each suite at its
end.
"""

import collections
import re
import sys
import textwrap
import xml.etree.ElementTree as ET


def reason_of(output):
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if re.search(r":\d+: Skipped$", line) and i + 1 < len(lines):
            return lines[i + 1].strip() or "skipped (no message)"
    for line in lines:
        m = re.match(r"\s*(?:\S+: )?(?:SKIP|skip):\s*(.*)", line)
        if m:
            return m.group(1).strip()
    return "skipped (no reason printed)"


def main():
    report, label = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "")
    try:
        root = ET.parse(report).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"no readable report{' for ' + label if label else ''} ({report}: {e})")
        return
    by_reason = collections.defaultdict(list)
    for case in root.iter("testcase"):
        if case.find("skipped") is None and case.get("status") not in ("notrun", "disabled"):
            continue
        out = case.find("system-out")
        name = case.get("name").split("  #")[0]  # a parameterised test: "Suite/Test/s3  # GetParam() = ..."
        by_reason[reason_of(out.text if out is not None and out.text else "")].append(name)
    where = f" ({label})" if label else ""
    if not by_reason:
        print(f"no test skipped{where}")
        return
    total = sum(len(v) for v in by_reason.values())
    print(f"{total} test(s) skipped{where}:")
    for reason, names in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        kind = "CUDA " if all(n.startswith("cuda.") for n in names) else ""
        print(f"  {len(names)} {kind}test(s) skipped: {reason}")
        print(textwrap.fill(", ".join(names), width=100, initial_indent="    ",
                            subsequent_indent="    ", break_on_hyphens=False))


if __name__ == "__main__":
    main()
