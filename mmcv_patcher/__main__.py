"""``python -m mmcv_patcher``: the same entry point as the ``mmcv-patcher`` script."""

import sys

from mmcv_patcher.cli import main

sys.exit(main())
