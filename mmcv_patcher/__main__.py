"""``python -m mmcv_patcher``: the same entry point as the ``mmcv-patcher`` script."""

from mmcv_patcher.cli import run

run()
