"""Small synthetic mmcv trees, written here (no mmcv code is copied into this repository)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Optional

from mmcv_patcher import gate, plan, registry
from mmcv_patcher.source import Source

ANCHOR = "scores_after_nms[mask[keep]] = dets[:, -1]"
FIXED = "scores_after_nms[mask[keep]] = dets[:, -1].to(scores_after_nms.dtype)"
ANCHOR_LINE = 18

#: The shape of mmcv 2.1.0's ops/nms.py, reduced to the statements the patches care about.
NMS = '''\
import torch


def nms(boxes, scores, iou_threshold, offset=0, score_threshold=0, max_num=-1):
    inds = NMSop.apply(boxes, scores, iou_threshold, offset, score_threshold, max_num)


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
    if boxes.size(-1) == 5:
        offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    else:
        offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    return boxes, scores


def soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, min_score=1e-3, method='linear', offset=0):
    dets, inds = SoftNMSop.apply(boxes.cpu(), scores.cpu(), float(iou_threshold), float(sigma), float(min_score), method_dict[method], int(offset))
    dets = dets[:inds.size(0)]


def nms_rotated(dets, scores, iou_threshold, labels=None, clockwise=True):
    keep_inds = ext_module.nms_rotated(dets_wl, scores, order, dets_sorted, input_labels, iou_threshold, multi_label)
'''
assert NMS.splitlines()[ANCHOR_LINE - 1].strip() == ANCHOR
#: batched_nms alone, as it stands in NMS (for files with it twice, or a copy of it).
BATCHED = NMS[NMS.index("def batched_nms") : NMS.index("def soft_nms")].rstrip("\n") + "\n"
#: NMS with the anchor also in nms(), the function above batched_nms.
ANCHOR_IN_NMS_TOO = NMS.replace("max_num)\n\n\ndef batched", f"max_num)\n    {ANCHOR}\n\n\ndef batched", 1)


def lines_of(text: str, stripped: str) -> list:
    """1-based numbers of the lines of ``text`` that are ``stripped`` once stripped."""
    return [number for number, line in enumerate(text.splitlines(), 1) if line.strip() == stripped]


def patched(text: str = NMS) -> str:
    """``text`` after apply with every registered patch (mmcv 2.1.0), as the CLI writes it."""
    family = registry.all_patches()
    for patch in family:
        verdict = plan.plan_apply(plan.assess(Source(text, "utf-8"), patch, gate.Release("mmcv", "2.1.0"), need_text=True, family=family), force=False)
        assert verdict.ok and verdict.new_text is not None, verdict
        text = verdict.new_text
    return text


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
