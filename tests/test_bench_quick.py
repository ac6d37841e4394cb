"""`scripts/bench --quick` runs once in the suite so that the benchmark cannot rot.

Small data, one round after one warm-up. Checks that every workload (1-10) produced a figure
for every alternative and for ocifs, and that ocifs served the same bytes as the native
tree (listing, types, sizes, contents, the blob's digest, the committed import) and printed
the same output as the reference alternative (`find | wc -l`, `tar -cf - . | wc -c`, ...).

Every feature the bench probes (layout, layer_gz, layer_zst, rootfs, blob, export, import,
import_archive) must work: a missing one shows as "n/a (feature missing: ...)" in the
table and fails this test. OCIFS_BENCH_REQUIRE_FEATURES (a comma list, or "all", the
default) narrows that while a feature is being rewritten.
The speed goals are not asserted: the bench reports them, the suite does not.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import require_fuse

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "scripts" / "bench"
NA_FEATURE = "feature missing"


def test_bench_quick(tmp_path: Path) -> None:
    require_fuse()
    out = tmp_path / "results"
    r = subprocess.run([str(BENCH), "--quick", "--out", str(out)], capture_output=True,
                       text=True, timeout=290, cwd=REPO)
    report = f"stdout:\n{r.stdout[-6000:]}\nstderr:\n{r.stderr[-4000:]}"
    assert r.returncode == 0, report
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    env = next(x for x in recs if x["record"] == "env")
    rows = [x for x in recs if x["record"] == "row"]
    verify = [x for x in recs if x["record"] == "verify"]
    features: dict[str, str | None] = env["features"]

    required = os.environ.get("OCIFS_BENCH_REQUIRE_FEATURES", "all")
    req = set(features) if required == "all" else {f for f in required.split(",") if f}
    missing_required = {f: features.get(f) for f in req if features.get(f)}
    assert not missing_required, f"required ocifs features missing: {missing_required}"

    # every workload produced figures
    assert {x["workload"] for x in rows} == {str(n) for n in range(1, 11)}, report
    for x in rows:
        has_figure = "wall_median" in x or "vmhwm_mib" in x
        where = f"{x['group']} / {x['label']}"
        if x["role"] == "ocifs" and not has_figure:
            assert x["na"].startswith(NA_FEATURE), f"ocifs failed in {where}: {x['na']}\n{report}"
        else:
            assert has_figure, f"no figure for {where}: {x.get('na')}\n{report}"
        if has_figure and "wall_median" in x:
            assert x["wall_median"] > 0

    # ocifs's bytes equal the alternative's
    bad = [v for v in verify if not v["ok"]]
    assert not bad, f"ocifs bytes differ from the native ones: {bad}"
    if not features.get("layer_gz"):
        assert any(v["check"].startswith("layers/0 of gz") for v in verify)
    if not features.get("blob"):
        assert any("blob" in v["check"] for v in verify)
    if not features.get("import"):
        assert any(".import/" in v["check"] for v in verify)
    for x in rows:
        if x.get("ref") and "stdout_equal_ocifs" in x:
            assert x["stdout_equal_ocifs"], (
                f"{x['group']}: ocifs printed {x.get('ocifs_stdout')!r}, "
                f"{x['label']} printed {x.get('stdout')!r}")
