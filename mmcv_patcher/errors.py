"""The root of the errors this package raises on purpose.

Each module raises its own subclass (a usage error, no mmcv found, a lock held too long...);
they stay values until the command line's edge, which turns them into one line and an exit
code. Catching :class:`Error` catches every one of them and nothing else.
"""


class Error(Exception):
    """An error of mmcv-patcher's own: anything else reaching the edge is a bug."""
