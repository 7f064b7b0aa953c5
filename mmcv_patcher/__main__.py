"""``python -m mmcv_patcher`` and the ``mmcv-patcher`` script: :func:`mmcv_patcher.cli.run`.

Ctrl-C and SIGTERM are held back from here on, while the tool's modules load, and let in
once the command line can answer them in one line (:func:`mmcv_patcher.cli.deliver_held_signals`).
"""

import signal


def main() -> None:
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    from mmcv_patcher.cli import run

    run()


if __name__ == "__main__":
    main()
