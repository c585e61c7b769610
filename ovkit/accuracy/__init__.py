"""Accuracy comparison: dump every layer in two settings, compare tensor by tensor, explain.

    from ovkit.accuracy import dump_module, compare_dumps, write_report
    dump_module(model, x, 'dumps/fp32', 'fp32')
    dump_module(model, x, 'dumps/bf16', 'bf16')
    result = compare_dumps('dumps/fp32', 'dumps/bf16')
    write_report(result, 'report')        # compare.csv, plots, advice.json

CLI: ``tools/analysis/compare_accuracy.py {dump,compare,run,suggest-fp32}``. Modules:
:mod:`.capture` (settings, leaf modules, flattening; shared by the dumpers), :mod:`.dump`
(torch, attribution), :mod:`.onnx_dump`, :mod:`.openmmlab` (configs and pipelines),
:mod:`.manifest` (dump layout), :mod:`.metrics` (streaming metrics, grades),
:mod:`.elements` (worst elements, error distribution), :mod:`.resources` (memory, threads),
:mod:`.compare`, :mod:`.report`, :mod:`.html` (the one-file HTML report), :mod:`.advisor`,
:mod:`.fix` (fp32 fix search), :mod:`.common` (small shared helpers).

Names are resolved lazily: ``import ovkit.accuracy`` imports neither torch nor matplotlib nor
onnx, so comparing dumps stays cheap.
"""
import importlib

_EXPORTS = {
    'AccuracyError': 'manifest', 'load_dump': 'manifest', 'save_arrays': 'manifest',
    'DumpWriter': 'manifest',
    'register_metric': 'metrics', 'unregister_metric': 'metrics', 'stream_metrics': 'metrics',
    'BUILTIN_METRICS': 'metrics', 'grade': 'metrics',
    'compare_dumps': 'compare', 'CompareResult': 'compare',
    'write_report': 'report', 'write_csv': 'report', 'plot_scatter': 'report',
    'tensor_detail': 'elements', 'top_errors': 'elements', 'error_histogram': 'elements',
    'advise': 'advisor',
    'dump_module': 'dump', 'parse_setting': 'capture', 'SETTINGS': 'capture',
    'dump_onnx': 'onnx_dump',
    'dump_config': 'openmmlab', 'build_model': 'openmmlab',
    'keep_fp32': 'fix', 'suggest_fp32': 'fix', 'fp32_snippet': 'fix',
    'write_html': 'html', 'own_error_ranking': 'advisor',
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f'.{_EXPORTS[name]}', __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(list(globals()) + __all__)
