"""Small synthetic mmcv trees, written here (no mmcv code is copied into this repository)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Optional

ANCHOR = "scores_after_nms[mask[keep]] = dets[:, -1]"
FIXED = "scores_after_nms[mask[keep]] = dets[:, -1].to(scores_after_nms.dtype)"
ANCHOR_LINE = 18

#: The shape of mmcv's batched_nms, reduced to what the patch cares about.
NMS = '''\
import torch


def nms(boxes, scores, iou_threshold):
    return boxes, scores


def batched_nms(boxes, scores, idxs, nms_cfg, class_agnostic=False):
    split_thr = nms_cfg.pop('split_thr', 10000)
    if boxes.shape[0] < split_thr:
        dets, keep = nms(boxes, scores, **nms_cfg)
        scores = dets[:, -1]
    else:
        scores_after_nms = scores.new_zeros(scores.size())
        for id in torch.unique(idxs):
            mask = (idxs == id).nonzero(as_tuple=False).view(-1)
            dets, keep = nms(boxes[mask], scores[mask], **nms_cfg)
            scores_after_nms[mask[keep]] = dets[:, -1]
    return boxes, scores
'''
assert NMS.splitlines()[ANCHOR_LINE - 1].strip() == ANCHOR


def nms_with(statement: str) -> str:
    """NMS with the anchor statement replaced by ``statement`` (indentation added)."""
    return NMS.replace(ANCHOR, statement)


def make_tree(
    root: Path,
    nms: str = NMS,
    *,
    version: Optional[str] = "2.1.0",
    distribution: Optional[str] = None,
    record: bool = True,
) -> Path:
    """``root/mmcv`` with ``ops/nms.py`` and ``version.py``; with ``distribution``, a
    ``.dist-info`` beside it whose RECORD lists (and hashes) the files. Returns the nms.py."""
    package = root / "mmcv"
    (package / "ops").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('mmcv-patcher must never import mmcv')\n")
    (package / "ops" / "__init__.py").write_text("")
    nms_path = package / "ops" / "nms.py"
    nms_path.write_bytes(nms.encode("utf-8"))
    if version is not None:
        (package / "version.py").write_text(f"__version__ = '{version}'\n")
    if distribution is not None:
        info = root / f"{distribution.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
        lines = []
        for path in sorted(package.rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            digest = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()
            lines.append(f"{relative},sha256={digest},{path.stat().st_size}" if record else f"{relative},,")
        lines.append(f"{info.name}/RECORD,,")
        (info / "RECORD").write_text("\n".join(lines) + "\n")
    return nms_path


def egg_info(root: Path, directory: str, name: str, version: str, listing: str, lines: str) -> None:
    """An ``.egg-info`` directory in ``root``: PKG-INFO and a file list (SOURCES.txt for an
    sdist, installed-files.txt for old pip's ``setup.py install``)."""
    info = root / directory
    info.mkdir()
    (info / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / listing).write_text(lines)
