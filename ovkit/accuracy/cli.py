"""Command line of ``tools/analysis/compare_accuracy.py`` (kept here so tests call ``main``).

    compare_accuracy.py dump CONFIG [CKPT] --input FILE --setting fp16 --out DIR
    compare_accuracy.py compare DIR_A DIR_B --out REPORT_DIR
    compare_accuracy.py run CONFIG [CKPT] --input FILE --settings fp32,bf16 --out DIR

``run`` builds the model and preprocesses the input once, dumps every setting into
``DIR/dumps/{setting}`` (replacing an earlier run there) and compares the first setting with
each other one into ``DIR/report/{first}_vs_{other}``. Exit status: 0, 1 on bad input (the
message says what to fix), 3 with ``--strict`` when the advisor reports an error.
"""
import argparse
import os.path as osp
import sys

from .manifest import AccuracyError

EXAMPLES = """examples:
  %(prog)s dump configs/shapes/faster_rcnn_tiny.py work_dirs/x/iter_20.pth \\
      --input data/shapes/coco/val/000000.png --setting bf16 --out dumps/bf16
  %(prog)s compare dumps/fp32 dumps/bf16 --out report --threshold 0.999
  %(prog)s run configs/shapes/faster_rcnn_tiny.py none --input img.png --settings fp32,bf16,fp16
"""


def _add_dump_args(p, many):
    p.add_argument('config', help='model config file')
    p.add_argument('checkpoint', nargs='?', default=None,
                   help='checkpoint (.pth); omit or "none" for seeded random weights')
    p.add_argument('--input', required=True,
                   help='image / video (through the config test pipeline) or a saved '
                        'preprocessed tensor (.npy, .pt)')
    if many:
        p.add_argument('--settings', default='fp32,bf16',
                       help='comma-separated settings; the first is the reference '
                            '(default fp32,bf16). Settings: fp32 fp16 bf16 cuda cuda-fp16 '
                            'cuda-bf16 onnx')
    else:
        p.add_argument('--setting', default='fp32',
                       help='fp32 (default) fp16 bf16 cuda cuda-fp16 cuda-bf16 onnx')
    p.add_argument('--mode', choices=('predict', 'tensor', 'feat'), default=None,
                   help='forward: predict (default; data samples out), tensor (raw head '
                        'outputs), feat (extract_feat: backbone + neck; default with onnx). '
                        'Dumps to compare need the same mode')
    p.add_argument('--dump-inputs', action='store_true', help="also dump each leaf module's "
                                                              'inputs')
    p.add_argument('--include', help='regex: dump only leaf modules whose name matches')
    p.add_argument('--exclude', help='regex: skip leaf modules whose name matches')
    p.add_argument('--seed', type=int, default=0, help='seed for random weights (default 0)')
    p.add_argument('--cfg-options', nargs='+', default=None, metavar='KEY=VALUE',
                   help='override config keys, as in tools/test.py')


def _add_compare_args(p):
    from .advisor import DEFAULT_INPUT_THRESHOLD, DEFAULT_THRESHOLD
    from .metrics import DEFAULT_CHUNK, FP16_MAX
    p.add_argument('--range', dest='op_range', default=None, metavar='START,END,STEP',
                   help="compare only A's op indices START..END (inclusive) every STEP")
    p.add_argument('--metric', default='cosine_similarity',
                   help='metric for the table, the scatter plot and the advisor '
                        '(default cosine_similarity)')
    p.add_argument('--threshold', type=float, default=DEFAULT_THRESHOLD,
                   help=f'good/bad split on --metric (default {DEFAULT_THRESHOLD})')
    p.add_argument('--input-threshold', type=float, default=DEFAULT_INPUT_THRESHOLD,
                   help='cosine below which the model inputs count as inconsistent '
                        f'(default {DEFAULT_INPUT_THRESHOLD})')
    p.add_argument('--fp16-max', type=float, default=FP16_MAX,
                   help=f'magnitude treated as fp16 overflow (default {FP16_MAX:g})')
    p.add_argument('--top', type=int, default=20, help='rows in the terminal table (20)')
    p.add_argument('--tensor', default=None,
                   help='tensor for the top-N / error-distribution report: op index or name '
                        '(default: the problem node, else the worst tensor)')
    p.add_argument('--top-n', type=int, default=20, help='elements listed for --tensor (20)')
    p.add_argument('--error-by', choices=('abs', 'rel'), default='abs',
                   help='rank elements by absolute or relative error (abs)')
    p.add_argument('--workers', type=int, default=None,
                   help='processes comparing pairs in parallel (default: all cores)')
    p.add_argument('--chunk', type=int, default=DEFAULT_CHUNK,
                   help=f'elements per streaming chunk (default {DEFAULT_CHUNK})')
    p.add_argument('--metric-plugin', action='append', default=[], metavar='MODULE',
                   help='import MODULE, which registers extra metrics with '
                        'ovkit.accuracy.register_metric (repeatable)')
    p.add_argument('--no-plots', action='store_true', help='skip the PNG plots')
    p.add_argument('--strict', action='store_true',
                   help='exit with status 3 when the advisor reports an error')


def build_parser():
    parser = argparse.ArgumentParser(
        prog='compare_accuracy.py', description='Dump every layer of a model in two settings, '
        'compare tensor by tensor, and explain where they diverge.', epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    d = sub.add_parser('dump', help='dump one setting')
    _add_dump_args(d, many=False)
    d.add_argument('--out', required=True, help='dump directory')
    d.add_argument('--overwrite', action='store_true', help='replace a dump already in --out')
    c = sub.add_parser('compare', help='compare two dump directories')
    c.add_argument('dir_a', help='reference dump (e.g. fp32)')
    c.add_argument('dir_b', help='dump to check')
    c.add_argument('--out', required=True, help='report directory')
    _add_compare_args(c)
    r = sub.add_parser('run', help='dump several settings and compare them with the first')
    _add_dump_args(r, many=True)
    r.add_argument('--out', required=True, help='output directory (dumps/ and report/)')
    _add_compare_args(r)
    for p in (d, c, r):
        p.add_argument('--no-progress', action='store_true', help='no progress bars')
    return parser


def _cfg_options(items):
    if not items:
        return None
    from mmengine.config import DictAction
    ns = argparse.Namespace()
    DictAction(option_strings=[], dest='o')(None, ns, items)
    return ns.o


def _report(args, dir_a, dir_b, out, console):
    from .compare import compare_dumps
    from .report import write_report
    result = compare_dumps(dir_a, dir_b, op_range=args.op_range, workers=args.workers,
                           chunk=args.chunk, fp16_max=args.fp16_max,
                           progress=not args.no_progress, plugins=args.metric_plugin)
    st = result.stats
    console.print(f'compared {st["pairs"]} pairs, {st["bytes"] / 1e6:.1f} MB in '
                  f'{st["seconds"]:.2f}s with {st["workers"]} worker(s)')
    paths = write_report(result, out, args.metric, args.threshold, args.input_threshold,
                         args.fp16_max, args.tensor, args.top_n, args.error_by, args.top,
                         plots=not args.no_plots, console=console)
    return paths['advice']


def _dump_kwargs(args):
    return dict(mode=args.mode, dump_inputs=args.dump_inputs, include=args.include,
                exclude=args.exclude, progress=not args.no_progress)


def main(argv=None):
    from rich.console import Console
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        if args.command == 'dump':
            from .openmmlab import dump_config
            dump = dump_config(args.config, args.checkpoint, args.input, args.out, args.setting,
                               cfg_options=_cfg_options(args.cfg_options), seed=args.seed,
                               overwrite=args.overwrite, **_dump_kwargs(args))
            console.print(f'dumped {len(dump.entries)} tensors ({dump.setting}) to {args.out}')
            return 0
        if args.command == 'compare':
            advice = _report(args, args.dir_a, args.dir_b, args.out, console)
            return 3 if args.strict and _has_error(advice) else 0
        return _run(args, console)
    except AccuracyError as e:
        print(f'error: {e}', file=sys.stderr)  # unwrapped: paths in it stay copyable
        return 1


def _has_error(advice):
    return any(f['severity'] == 'error' for f in advice['findings'])


def _run(args, console):
    from .dump import parse_setting
    from .openmmlab import build_model, default_mode, dump_config, prepare_inputs
    settings = [parse_setting(s) for s in args.settings.split(',') if s.strip()]
    if len(settings) < 2:
        raise AccuracyError(f'--settings {args.settings!r}: give at least two, the reference '
                            'first (e.g. fp32,bf16)')
    model, cfg = build_model(args.config, args.checkpoint, _cfg_options(args.cfg_options),
                             args.seed)
    prepared = prepare_inputs(model, cfg, args.input)
    if args.mode is None:  # one forward for every setting, so that all dumps match
        args.mode = default_mode(model, settings)
    dirs = []
    for s in settings:
        d = osp.join(args.out, 'dumps', s.name)
        dump = dump_config(cfg, args.checkpoint, args.input, d, s, model=model,
                           prepared=prepared, seed=args.seed, overwrite=True,
                           **_dump_kwargs(args))
        console.print(f'dumped {len(dump.entries)} tensors ({s.name}) to {d}')
        dirs.append(d)
    failed = False
    for s, d in zip(settings[1:], dirs[1:]):
        out = osp.join(args.out, 'report', f'{settings[0].name}_vs_{s.name}')
        console.rule(f'{settings[0].name} vs {s.name}')
        advice = _report(args, dirs[0], d, out, console)
        failed |= _has_error(advice)
    return 3 if args.strict and failed else 0


if __name__ == '__main__':
    sys.exit(main())
