"""The ``recon`` command's entry point (``python -m recon`` and the console script of ``[project.scripts]``).

It imports nothing heavy itself. Run as the program (``argv`` None), Ctrl-C while ``recon.cli`` (and with it
torch, h5py, the samplers) is being imported ends the process at once with the single line ``recon: interrupted``
and exit status 130: nothing has been written yet, and an interrupt inside an extension module's initialisation
would otherwise surface as a broken import and a traceback. While the command runs ``recon.cli.main`` handles
Ctrl-C the same way, after the writers have removed their temporary files. Once the command has returned, its result is
complete and its status decided: Ctrl-C is then ignored while the interpreter shuts down (Python resets a handler
to the default there, and the process would die without its line). Before this module runs (the interpreter's
own start, some milliseconds) Python's default applies.
"""
import os
import signal
import sys

INTERRUPTED = 130  # 128 + SIGINT, the shell's convention
LINE = "recon: interrupted"


def _interrupted(*_) -> None:
    os.write(2, (LINE + "\n").encode())
    os._exit(INTERRUPTED)


def _handle(handler):
    """Install ``handler`` for SIGINT; the previous one, or None where it is not installed: signals cannot be set
    (another thread), or the process was started with SIGINT ignored (a background job of a script), which stays
    ignored as the shell intends."""
    try:
        if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
            return None
        return signal.signal(signal.SIGINT, handler)
    except ValueError:
        return None


def main(argv=None) -> int:
    program = argv is None
    if program:  # outside recon.cli.main's own handling: end at once with the line
        _handle(_interrupted)
    from recon.cli import main as run
    status = run(argv)
    if program:
        _handle(signal.SIG_IGN)
    return status


if __name__ == "__main__":
    sys.exit(main())
