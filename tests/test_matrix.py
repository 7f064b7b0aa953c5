"""Every release on the package index (tests/releases.MATRIX): each patch finds exactly the
state its ranges promise, apply patches every affected statement, the result compiles and
``status --check`` passes, and revert gives back the released bytes. Run through the CLI on
the release's own ``nms.py`` and ``version.py`` with a dist-info whose RECORD hashes them,
as pip would have installed them (which also exercises ``status`` without LibCST)."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path

import pytest

from mmcv_patcher import gate, registry
from tests import releases
from tests.releases import Release

pytestmark = pytest.mark.release

PATCHES = registry.all_patches()


def expected_states(release: Release) -> dict:
    """What status must say of each patch: unpatched in range, not-affected below it, and
    past the end of a range only onedl-mmcv 2.3.6, whose batched_nms fix is upstream."""
    states = {}
    for patch in PATCHES:
        where, _ = gate.gate(patch, gate.Release(release.distribution, release.version))
        states[patch.id] = {gate.Gate.AFFECTED: "unpatched", gate.Gate.BELOW: "not-affected", gate.Gate.OUTSIDE: "fixed-upstream"}[where]
    return states


def _installed(release: Release, root: Path) -> Path:
    """The release's mmcv/ops/nms.py and mmcv/version.py under ``root``, with a dist-info
    whose RECORD hashes them; returns the nms.py."""
    package = root / "mmcv"
    (package / "ops").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    record = ["mmcv/__init__.py,,"]
    for inside in ("mmcv/ops/nms.py", "mmcv/version.py"):
        data = releases.released_file(release, inside)
        (root / inside).write_bytes(data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{inside},sha256={digest},{len(data)}")
    info = root / f"{release.distribution.replace('-', '_')}-{release.version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {release.distribution}\nVersion: {release.version}\n")
    (info / "RECORD").write_text("\n".join(record + [f"{info.name}/RECORD,,"]) + "\n")
    return package / "ops" / "nms.py"


@pytest.mark.parametrize("release", releases.MATRIX, ids=lambda r: r.id)
def test_every_release_patches_and_reverts_exactly(release: Release, tmp_path: Path) -> None:
    nms = _installed(release, tmp_path)
    original = nms.read_bytes()
    python = Path(sys.executable)

    def run(*args: str, code: int = 0) -> dict:
        done = releases.tool(python, *args, "--path", str(tmp_path), "--json")
        assert done.returncode == code, done.stdout + done.stderr
        return json.loads(done.stdout)

    expected = expected_states(release)
    status = run("status", "--check", code=3 if "unpatched" in expected.values() else 0)
    assert {p["id"]: p["state"] for p in status["patches"]} == expected
    applied = run("apply")
    assert {p["id"]: p["state"] for p in applied["patches"]} == {k: "patched" if v == "unpatched" else v for k, v in expected.items()}
    patched = nms.read_bytes()
    compile(patched, str(nms), "exec", dont_inherit=True)
    markers = patched.count(b"# mmcv-patcher: ")
    assert markers == sum(sum(gate.expected_counts(p, a)) for p in PATCHES for w, a in [gate.gate(p, gate.Release(release.distribution, release.version))] if a is not None)
    assert run("status", "--check")["patches"]
    run("revert")
    assert nms.read_bytes() == original
