"""Memory and threads of the streaming comparison: flat views, page release, one BLAS thread,
resident-memory readings (Linux) for the benchmark. numpy only."""
import contextlib
import ctypes
import mmap
import os

import numpy as np

DEFAULT_CHUNK = 1 << 16  # 64 Ki elements: six scratch buffers, ~3 MiB, stay in cache
_RELEASE_BYTES = 8 << 20  # give mapped pages back every 8 MiB read

def flat_view(x):
    """1-D view in logical (C) order; copies only a non-C-contiguous array (rare: Fortran npy)."""
    x = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if x.ndim == 1:
        return x
    if x.flags.c_contiguous:
        return x.reshape(-1)
    return np.ascontiguousarray(x).reshape(-1)


class PageReleaser:
    """Drop already-read pages of a memory map, so resident memory stays at a few chunks.

    The page cache keeps them; only this process' mapping lets go (MADV_DONTNEED on a
    read-only file mapping discards nothing).
    """

    def __init__(self, arr):
        self.mm = getattr(arr, '_mmap', None)
        self.base = 0
        if self.mm is not None:
            # np.memmap maps from an allocation-granularity-aligned offset before the data
            self.base = arr.offset - arr.offset % mmap.ALLOCATIONGRANULARITY
        self.itemsize = arr.itemsize
        self.done = 0

    def release(self, elements_read, final=False):
        if self.mm is None or not hasattr(self.mm, 'madvise'):
            return
        end = self.base + elements_read * self.itemsize
        end -= end % mmap.PAGESIZE
        if end - self.done >= _RELEASE_BYTES or (final and end > self.done):
            try:
                self.mm.madvise(mmap.MADV_DONTNEED, self.done, end - self.done)
            except (OSError, ValueError, AttributeError):
                self.mm = None
                return
            self.done = end


_BLAS = None


def openblas_controls():
    """(get, set) of every OpenBLAS numpy has loaded (found in /proc/self/maps); [] elsewhere."""
    global _BLAS
    if _BLAS is not None:
        return _BLAS
    _BLAS = []
    try:
        with open('/proc/self/maps') as f:
            paths = {ln.split()[5] for ln in f if len(ln.split()) >= 6}
    except OSError:
        return _BLAS
    for path in sorted(p for p in paths if 'openblas' in os.path.basename(p).lower()):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ('scipy_openblas', 'openblas'):
            for suffix in ('64_', ''):
                get = getattr(lib, f'{prefix}_get_num_threads{suffix}', None)
                put = getattr(lib, f'{prefix}_set_num_threads{suffix}', None)
                if get is not None and put is not None:
                    _BLAS.append((get, put))
                    break
            else:
                continue
            break
    return _BLAS


@contextlib.contextmanager
def single_thread_blas():
    """Run BLAS on one thread inside the kernel.

    Our dot products are on cache-sized chunks; OpenBLAS would fork them to its threads,
    which then spin and steal the core from the next numpy call (measured: up to 20x slower
    on 2 busy cores). Parallelism comes from comparing pairs in separate processes instead.
    """
    controls = openblas_controls()
    old = [get() for get, _ in controls]
    for _, put in controls:
        put(1)
    try:
        yield
    finally:
        for (_, put), n in zip(controls, old):
            put(n)



def status_kb(field):
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss():
    """Restart the peak-RSS counter (VmHWM) at the current RSS (Linux >= 4.0), so a worker
    measures what comparing costs, not what its parent held when it forked."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False

