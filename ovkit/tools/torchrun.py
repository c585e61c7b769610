"""torchrun for ovkit's launchers: quiet when the workers stopped on a user error.

    python -m ovkit.tools.torchrun [torchrun arguments] SCRIPT [script arguments]

Exactly ``python -m torch.distributed.run``, except when the first worker to fail exited with
:data:`ovkit.engine.errors.EXIT_USER_ERROR`: that worker already printed one line naming the
problem and the fix (a NaN loss, too many unreadable samples, a checkpoint that does not fit),
so torchrun's ``ChildFailedError`` report (a traceback of the launcher itself and a table per
rank) would only bury it. The launcher then exits with the same status. Any other failure is
reported as torchrun reports it.
"""
import sys


def main(argv=None):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from ovkit.engine.errors import EXIT_USER_ERROR
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        if failure.exitcode == EXIT_USER_ERROR:
            raise SystemExit(EXIT_USER_ERROR) from None
        raise


if __name__ == '__main__':
    main()
