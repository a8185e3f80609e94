"""``python -m lightning_nas <command>``: LightningCLI for every LightningModule, plus the pipeline stages.

Commands: ``fit``, ``validate``, ``test``, ``predict`` (Lightning's own, for any module/datamodule given by
``class_path`` in the config) and every command of the one table :data:`lightning_nas.stages.COMMANDS` (``evaluate``,
``zc``, ``cluster``, ``search``, ``generate``, ``export``, ``pipeline``, ``report``), which also gives ``--help``.
Heavy imports happen only once a command is chosen.

**Errors.** Run as a program (``python -m lightning_nas``, the ``lightning-nas`` script: :func:`main` without
arguments), a *usage error* — a bad setting, a missing or mismatched input file — prints one ``error: <message>``
line on stderr and exits with code 2, like a bad option does; ``LIGHTNING_NAS_DEBUG=1`` shows the traceback instead.
:func:`is_usage_error` says what counts and why. Called from Python (``main(argv)``), every exception propagates.
"""

from __future__ import annotations

import errno
import importlib
import linecache
import os
import sys
from pathlib import Path

from .stages import BY_NAME, CLI_COMMANDS, LIGHTNING_COMMANDS, PROG, help_text

DEBUG_ENV = "LIGHTNING_NAS_DEBUG"
USAGE_ERRORS = (ValueError, FileNotFoundError)
_PROJECT_DIRS = tuple(os.path.realpath(Path(__file__).parents[1] / name) + os.sep
                      for name in ("lightning_nas", "datamodules", "callbacks"))


def is_usage_error(err: BaseException) -> bool:
    """Whether ``err`` is a validation error, which the command line reports in one line.

    The project validates settings, input files and artifacts with two exception types, each message naming the
    setting or file and the fix; they are raised in dozens of places, so they are recognised by where they come from
    rather than re-typed as a new ``UsageError`` class at every raise (which every module would have to adopt):

    - a ``ValueError`` (or subclass, e.g. :class:`~lightning_nas.archive.ArchiveError`) raised by a ``raise``
      statement of the project's own code (``lightning_nas``, ``datamodules``, ``callbacks``: the innermost frame of
      the traceback lies there and its line is a ``raise``);
    - a ``FileNotFoundError``, wherever it comes from: a missing file or artifact, named in the message.

    Anything else keeps its traceback: other exception types, and a ``ValueError`` raised inside a library (numpy,
    torch, sklearn, …) or by a builtin in our code (``a, b = [1, 2, 3]``, ``zip(strict=True)``), which is a bug of
    ours rather than the user's mistake."""
    if isinstance(err, FileNotFoundError):
        return True
    if not isinstance(err, ValueError) or err.__traceback__ is None:
        return False
    tb = err.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    return (os.path.realpath(filename).startswith(_PROJECT_DIRS)
            and linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise"))


def find_usage_error(err: BaseException) -> BaseException | None:
    """``err`` itself when :func:`is_usage_error`, else the first usage error among its explicit causes
    (``raise … from``): jsonargparse, for one, re-raises a module's ``ValueError`` as a union-type error of its
    own."""
    seen = 0
    while err is not None and seen < 16:
        if is_usage_error(err):
            return err
        err, seen = err.__cause__, seen + 1
    return None


_DISK_FULL_MESSAGES = ("database or disk is full", "file write failed", "no space left on device")


def find_disk_full(err: BaseException) -> BaseException | None:
    """The exception in ``err``'s chain (itself, its causes and contexts) that says the disk is full: an ``OSError``
    with ``ENOSPC``/``EDQUOT``, SQLite's "database or disk is full", torch's "file write failed" (``torch.save``'s
    zip writer) — the one error a user causes that no setting names."""
    seen = 0
    while err is not None and seen < 16:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return err
        if not isinstance(err, OSError) and any(m in str(err).lower() for m in _DISK_FULL_MESSAGES):
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def remove_partial_copy(err: BaseException) -> Path | None:
    """The destination of a copy that a full disk cut short (``err.filename2``, e.g. Lightning moving a checkpoint
    from its temporary file): removed, so that nothing reads a truncated file as a finished one."""
    target = getattr(err, "filename2", None)
    if target and Path(target).is_file():
        Path(target).unlink()
        return Path(target)
    return None


def report_disk_full(err: BaseException, removed: Path | None = None) -> None:
    """The one paragraph for a full disk (``removed``: the half-written file :func:`remove_partial_copy` deleted)."""
    target = getattr(err, "filename2", None) or getattr(err, "filename", None)
    where = f" writing {target}" if target else ""
    if removed is not None:
        where += " (the half-written file was removed)"
    print(f"error: the disk is full{where} ({str(err).strip() or type(err).__name__}).\n"
          "       What was stored before is kept: archives are SQLite (the interrupted transaction is rolled back), a "
          "pipeline stage counts as done only once it finished (the next `pipeline` run redoes the one cut short).\n"
          "       Free some space (`df -h` on the run directory) or point the run at another disk, then run the same "
          "command again.", file=sys.stderr)


def report_usage_error(err: BaseException) -> None:
    """``error: <message>`` on stderr; continuation lines of a multi-line message are indented."""
    message = str(err).strip() or type(err).__name__
    print("error: " + message.replace("\n", "\n       "), file=sys.stderr)


def run_stage(argv: list[str], config_cls, run, command: str, doc: str | None = None) -> dict:
    """Parse ``--config`` (YAML) and overrides into ``config_cls`` with jsonargparse, run the stage with
    ``run(config)`` and print the metrics it returns. A bad option or config file exits with code 2 (jsonargparse);
    settings that ``config_cls`` refuses raise ``ValueError`` (one ``error:`` line from :func:`main`)."""
    import json

    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=f"{PROG} {command}", description=doc, default_env=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with the settings below")
    parser.add_class_arguments(config_cls, as_group=False)
    cfg = parser.parse_args(argv)
    cfg.pop("config", None)
    metrics = run(config_cls(**{k: v for k, v in cfg.as_dict().items() if k != "__path__"}))
    print(json.dumps(metrics, indent=2))
    return metrics


HELP = help_text(DEBUG_ENV)


def _dispatch(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(HELP)
        return
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        from .lightning_cli import NASCLI

        NASCLI(args=[command, *rest])
    elif command in CLI_COMMANDS:  # each command's module has main(argv), imported only when chosen
        importlib.import_module(BY_NAME[command].module, __package__).main(rest)
    else:
        raise ValueError(f"unknown command {command!r}; choose from {', '.join(LIGHTNING_COMMANDS + CLI_COMMANDS)}"
                         f" ({PROG} --help)")


def main(argv: list[str] | None = None, *, exit_on_error: bool | None = None) -> None:
    """Run ``argv`` (default: the process's command line). ``exit_on_error`` (default: ``argv is None``, i.e. run
    as a program) turns a usage error (:func:`is_usage_error`) into one ``error:`` line on stderr and exit code 2 (a
    full disk, :func:`find_disk_full`, into one paragraph),
    unless ``LIGHTNING_NAS_DEBUG`` is set; otherwise (``main(argv)`` from Python: the pipeline, tests) it
    propagates."""
    if exit_on_error is None:
        exit_on_error = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    from .distributed import reserve_local_port

    reserve_local_port()  # before any stage spawns ranks: two processes started together never share a port
    try:
        _dispatch(argv)
    except Exception as err:
        full = find_disk_full(err)
        removed = remove_partial_copy(full) if full is not None else None  # also with a traceback: none left to read
        usage = find_usage_error(err) if isinstance(err, USAGE_ERRORS) else None
        if not exit_on_error or os.environ.get(DEBUG_ENV, "") not in ("", "0") or (usage or full) is None:
            raise
        if usage is not None:
            report_usage_error(usage)
        else:
            report_disk_full(full, removed)
        sys.exit(2)
