"""Command line of ``tools/analysis/compare_accuracy.py`` (kept here so tests call ``main``).

    compare_accuracy.py dump CONFIG [CKPT] --input FILE --setting fp16 --out DIR
    compare_accuracy.py compare DIR_A DIR_B --out REPORT_DIR
    compare_accuracy.py run CONFIG [CKPT] --input FILE --settings fp32,bf16 --out DIR [--isolate]
    compare_accuracy.py suggest-fp32 CONFIG [CKPT] --input FILE --setting fp16 --out DIR

``run`` builds the model and preprocesses the input once, dumps every setting into
``DIR/dumps/{setting}`` (replacing an earlier run there) and compares the first setting with
each other one into ``DIR/report/{first}_vs_{other}`` (CSV, report.html, PNGs, advice).
``--isolate`` dumps the reference with module inputs and runs every module of the other
settings on them too (error attribution). ``suggest-fp32`` does that for one low-precision
setting and then searches the modules to keep in float32 (``DIR/keep_fp32.py``). Exit status:
0; 2 on a bad argument (a missing path, an unknown setting or metric, flags that do not go
together: checked before any work, one ``error:`` line naming the argument and the fix); 1 on
bad input found while working (the message says what to fix); 3 with ``--strict`` when the
advisor reports an error.
"""
import argparse
import math
import os.path as osp
import sys

from .common import DEFAULT_MAX_PASSES
from .manifest import AccuracyError

EXAMPLES = """examples (shapes data: python tools/data/make_shapes.py --out data/shapes):
  %(prog)s dump configs/shapes/faster_rcnn_tiny.py work_dirs/x/iter_20.pth \\
      --input data/shapes/coco/val/100000.png --setting bf16 --out dumps/bf16
  %(prog)s compare dumps/fp32 dumps/bf16 --out report --threshold 0.999
  %(prog)s run configs/shapes/faster_rcnn_tiny.py --input data/shapes/coco/val/100000.png \\
      --settings fp32,bf16,fp16 --isolate --out work_dirs/acc_det
  %(prog)s suggest-fp32 configs/pptsm/pptsm_tiny-r18_2xb4-1x1x8-24e_shapes-video.py \\
      --input data/shapes/video/videos/grow/grow_val_000.avi --setting fp16 --out work_dirs/fix
  %(prog)s run mmpretrain::resnet/resnet18_8xb32_in1k.py --input img.png --isolate --out acc
"""


def _add_dump_args(p, many):
    p.add_argument('config', help='model config file, or a packaged one such as '
                                  'mmpretrain::resnet/resnet18_8xb32_in1k.py')
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
        p.add_argument('--isolate', action='store_true',
                       help='error attribution: also run every module of the other settings '
                            "on the reference's recorded inputs (one extra forward pass each)")
    else:
        p.add_argument('--setting', default=None,
                       help='fp32 (dump default) fp16 bf16 cuda cuda-fp16 cuda-bf16 onnx; '
                            'suggest-fp32: fp16 (default) bf16 cuda-fp16 cuda-bf16')
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
    from .metrics import FP16_MAX
    from .resources import DEFAULT_CHUNK
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
    p.add_argument('--no-html', action='store_true', help='skip report.html')
    p.add_argument('--html-cdfs', type=int, default=10,
                   help='worst tensors whose error distribution report.html embeds (10)')
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
    d.add_argument('--isolate', metavar='REF_DIR', default=None,
                   help='reference dump with module inputs: also run every module on its '
                        'recorded inputs (error attribution)')
    c = sub.add_parser('compare', help='compare two dump directories')
    c.add_argument('dir_a', help='reference dump (e.g. fp32)')
    c.add_argument('dir_b', help='dump to check')
    c.add_argument('--out', required=True, help='report directory')
    _add_compare_args(c)
    r = sub.add_parser('run', help='dump several settings and compare them with the first')
    _add_dump_args(r, many=True)
    r.add_argument('--out', required=True, help='output directory (dumps/ and report/)')
    _add_compare_args(r)
    f = sub.add_parser('suggest-fp32', help='find the modules to keep in float32 under a '
                                            'low-precision setting')
    _add_dump_args(f, many=False)
    f.add_argument('--out', required=True, help='output directory (dumps/, report/, '
                                                'keep_fp32.py, suggest_fp32.json)')
    f.add_argument('--max-passes', type=_max_passes, default=DEFAULT_MAX_PASSES,
                   help='forward passes the search may take; when they run out it returns '
                        'the smallest passing set found so far, maybe whole blocks '
                        f'(default {DEFAULT_MAX_PASSES}; 0: no cap)')
    _add_compare_args(f)
    for p in (d, c, r, f):
        p.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.commands = dict(dump=d, compare=c, run=r)
    parser.commands['suggest-fp32'] = f
    return parser


def _max_passes(text):
    n = int(text)
    if n != 0 and n < 2:
        raise argparse.ArgumentTypeError(f'{text}: the search needs at least 2 passes (the '
                                         'setting alone, then every block in float32); 0: no cap')
    return n or None


# (low, high) a threshold on the metric can take; other metrics: any real number
_THRESHOLD_RANGES = {'cosine_similarity': (-1.0, 1.0), 'error_ratio_1e-3': (0.0, 1.0),
                     'error_ratio_5e-3': (0.0, 1.0), 'sqnr_db': (-math.inf, math.inf)}


def _check_metric(sub, args):
    """An unknown ``--metric`` or a threshold out of its range is a usage error."""
    import importlib

    from .metrics import BUILTIN_METRICS, higher_is_better, metric_names
    try:
        for name in args.metric_plugin:
            importlib.import_module(name)
    except ImportError as e:
        sub.error(f'argument --metric-plugin: cannot import {e.name!r} ({e}); pass an '
                  'importable module name (on PYTHONPATH)')
    try:
        higher_is_better(args.metric)
    except AccuracyError:
        sub.error(f'argument --metric: unknown metric {args.metric!r}; choose one of '
                  f'{", ".join(metric_names())} (or register one with --metric-plugin)')
    if args.command == 'suggest-fp32' and args.metric not in BUILTIN_METRICS:
        sub.error(f'argument --metric: {args.metric!r} cannot judge the search passes; choose '
                  f'one of {", ".join(BUILTIN_METRICS)}')
    low, high = _THRESHOLD_RANGES.get(args.metric, (0.0, math.inf))
    if args.metric not in BUILTIN_METRICS:
        low = -math.inf  # a plug-in metric: any number
    if math.isnan(args.threshold) or not low <= args.threshold <= high:
        sub.error(f'argument --threshold: {args.threshold:g} is out of range for '
                  f'{args.metric} ([{low:g}, {high:g}])')
    for flag in ('workers', 'chunk', 'top', 'top_n'):
        v = getattr(args, flag)
        if v is not None and v < 1:
            sub.error(f'argument --{flag.replace("_", "-")}: {v} must be at least 1')


def _setting(sub, flag, name):
    from .capture import _ALIASES, SETTINGS, parse_setting
    key = str(name).strip().lower()
    if _ALIASES.get(key, key) not in SETTINGS:
        sub.error(f'argument {flag}: unknown setting {name!r}; choose one of '
                  f'{", ".join(SETTINGS)}')
    try:
        return parse_setting(name)
    except AccuracyError as e:  # a CUDA setting without a GPU
        sub.error(f'argument {flag}: {e}')


def _check_path(sub, flag, path, what, fix, is_dir=False):
    if not osp.exists(path):
        sub.error(f'argument {flag}: {path} does not exist; {fix}')
    if is_dir and not osp.isdir(path):
        sub.error(f'argument {flag}: {path} is a file, not {what}; {fix}')
    if not is_dir and osp.isdir(path):
        sub.error(f'argument {flag}: {path} is a directory, not {what}; {fix}')


def _check_args(parser, args):
    """Fail at once (usage error, exit status 2, one ``error:`` line naming the argument and
    the fix) on a bad path, an unknown setting, a bad metric or threshold, or flags that do
    not go together, before any model is built or any dump read."""
    import re
    sub = parser.commands[args.command]
    settings = []
    if args.command != 'dump':
        _check_metric(sub, args)
    if args.command == 'dump':
        settings = [_setting(sub, '--setting', args.setting or 'fp32')]
        if args.isolate:
            _check_path(sub, '--isolate', args.isolate, 'a dump directory',
                        'pass the reference dumped with --dump-inputs', is_dir=True)
    elif args.command == 'run':
        names = [n for n in args.settings.split(',') if n.strip()]
        settings = [_setting(sub, '--settings', n) for n in names]
        if len(settings) < 2:
            sub.error(f'argument --settings: {args.settings!r} names one setting; give at least '
                      'two, the reference first (e.g. fp32,bf16)')
        if len({s.name for s in settings}) < len(settings):
            sub.error(f'argument --settings: {args.settings!r} names a setting twice')
    elif args.command == 'suggest-fp32':
        s = _setting(sub, '--setting', args.setting or 'fp16')
        settings = [s]
        if s.backend != 'torch' or not s.autocast_dtype:
            sub.error(f'argument --setting: suggest-fp32 searches under a low-precision torch '
                      f'setting; {s.name!r} is not one: pass fp16, bf16, cuda-fp16 or cuda-bf16')
    if getattr(args, 'mode', None) == 'predict' and any(x.backend != 'torch' for x in settings):
        sub.error('argument --mode: predict cannot be exported to ONNX (detector heads call '
                  'mmcv ops); pass --mode tensor or --mode feat with onnx')
    if args.command == 'compare':
        for flag, path in (('dir_a', args.dir_a), ('dir_b', args.dir_b)):
            _check_path(sub, flag, path, 'a dump directory', 'pass a folder written by '
                        '`compare_accuracy.py dump ... --out DIR`', is_dir=True)
    else:
        if '::' not in args.config:
            _check_path(sub, 'config', args.config, 'a config file',
                        'pass a config such as configs/shapes/faster_rcnn_tiny.py or a '
                        'packaged one such as mmpretrain::resnet/resnet18_8xb32_in1k.py')
        if args.checkpoint and args.checkpoint.lower() != 'none':
            _check_path(sub, 'checkpoint', args.checkpoint, 'a checkpoint',
                        'pass a .pth written by training, or omit it for seeded random weights')
        _check_path(sub, '--input', args.input, 'an input file', 'pass an image, a video or '
                    'a saved preprocessed tensor (.npy, .pt)')
        for flag in ('include', 'exclude'):
            try:
                re.compile(getattr(args, flag) or '')
            except re.error as e:
                sub.error(f'argument --{flag}: {getattr(args, flag)!r} is not a valid regular '
                          f'expression ({e})')


def _cfg_options(items):
    if not items:
        return None
    from mmengine.config import DictAction
    ns = argparse.Namespace()
    DictAction(option_strings=[], dest='o')(None, ns, items)
    return ns.o


def _report(args, dir_a, dir_b, out, console):
    from .compare import compare_dumps
    result = compare_dumps(dir_a, dir_b, op_range=args.op_range, workers=args.workers,
                           chunk=args.chunk, fp16_max=args.fp16_max,
                           progress=not args.no_progress, plugins=args.metric_plugin)
    st = result.stats
    console.print(f'compared {st["pairs"]} pairs, {st["bytes"] / 1e6:.1f} MB in '
                  f'{st["seconds"]:.2f}s with {st["workers"]} worker(s)')
    return _write(args, result, out, console)['advice']


def _write(args, result, out, console, extra_findings=()):
    from .report import write_report
    return write_report(result, out, args.metric, args.threshold, args.input_threshold,
                        args.fp16_max, args.tensor, args.top_n, args.error_by, args.top,
                        plots=not args.no_plots, console=console, html=not args.no_html,
                        html_cdfs=args.html_cdfs, extra_findings=extra_findings)


def _dump_kwargs(args):
    return dict(mode=args.mode, dump_inputs=args.dump_inputs, include=args.include,
                exclude=args.exclude, progress=not args.no_progress)


def main(argv=None):
    from .common import make_console
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    console = make_console()
    try:
        if args.command == 'dump':
            from .openmmlab import dump_config
            dump = dump_config(args.config, args.checkpoint, args.input, args.out,
                               args.setting or 'fp32',
                               cfg_options=_cfg_options(args.cfg_options), seed=args.seed,
                               overwrite=args.overwrite, isolate_from=args.isolate,
                               **_dump_kwargs(args))
            console.print(f'dumped {len(dump.entries)} tensors ({dump.setting}) to {args.out}')
            return 0
        if args.command == 'compare':
            advice = _report(args, args.dir_a, args.dir_b, args.out, console)
            return 3 if args.strict and _has_error(advice) else 0
        if args.command == 'suggest-fp32':
            return _suggest(args, console)
        return _run(args, console)
    except AccuracyError as e:
        print(f'error: {e}', file=sys.stderr)  # unwrapped: paths in it stay copyable
        return 1


def _has_error(advice):
    return any(f['severity'] == 'error' for f in advice['findings'])


def _run(args, console):
    from .capture import parse_setting
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
    for i, s in enumerate(settings):
        d = osp.join(args.out, 'dumps', s.name)
        kw = _dump_kwargs(args)
        if args.isolate and i == 0:
            kw['dump_inputs'] = True
        elif args.isolate:
            kw['isolate_from'] = dirs[0]
        dump = dump_config(cfg, args.checkpoint, args.input, d, s, model=model,
                           prepared=prepared, seed=args.seed, overwrite=True, **kw)
        iso = dump.meta.get('isolation')
        console.print(f'dumped {len(dump.entries)} tensors ({s.name}) to {d}' + (
            f'; isolated {iso["calls"]} module calls in {iso["seconds"]:.2f}s (forward pass '
            f'{dump.meta.get("forward_seconds") or 0:.2f}s)' if iso else ''))
        dirs.append(d)
    failed = False
    for s, d in zip(settings[1:], dirs[1:]):
        out = osp.join(args.out, 'report', f'{settings[0].name}_vs_{s.name}')
        console.rule(f'{settings[0].name} vs {s.name}')
        advice = _report(args, dirs[0], d, out, console)
        failed |= _has_error(advice)
    return 3 if args.strict and failed else 0


def _suggest(args, console):
    import json

    from .fix import fix_finding, suggest_fp32
    from .openmmlab import build_model, host_scope, make_forward, prepare_inputs
    setting = args.setting or 'fp16'
    model, cfg = build_model(args.config, args.checkpoint, _cfg_options(args.cfg_options),
                             args.seed)
    inputs, samples, info = prepare_inputs(model, cfg, args.input)
    mode = args.mode or 'predict'
    meta = dict(config=getattr(cfg, 'filename', args.config), checkpoint=args.checkpoint,
                input=info, mode=mode)
    with host_scope(cfg):
        found = suggest_fp32(model, inputs, args.out, setting,
                             forward=make_forward(samples, mode), metric=args.metric,
                             threshold=args.threshold, skip=('data_preprocessor',),
                             seed=args.seed, meta=meta, progress=not args.no_progress,
                             workers=args.workers, max_passes=args.max_passes)
    finding = fix_finding(found)
    paths = _write(args, found['result'], osp.join(args.out, 'report'), console, [finding])
    with open(osp.join(args.out, 'suggest_fp32.json'), 'w') as f:
        json.dump({k: v for k, v in found.items() if k != 'result'}, f, indent=1, default=str)
    if found['snippet']:
        with open(osp.join(args.out, 'keep_fp32.py'), 'w') as f:
            f.write(found['snippet'])
        console.rule('keep in float32')
        print(found['snippet'], flush=True)  # not through rich: no wrapping, paste-ready
    console.print(f'{finding["message"]}; html report: {paths["html"]}', markup=False)
    failed = found['modules'] is None or _has_error(paths['advice'])
    return 3 if args.strict and failed else 0


if __name__ == '__main__':
    sys.exit(main())
