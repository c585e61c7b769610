"""GloVe word vectors for class names, read from a local directory (never downloaded).

SGB (``utils_motifs.obj_edge_vectors``) initialises the object embeddings of Motifs (and of the
issue-9 predictors) from GloVe 6B, 200-d: a name found in the vocabulary takes its vector, a
multi-word name its longest word's vector, anything else a N(0, 1) sample. SGB downloads the
zip when it is missing; ovkit reads ``<glove_dir>/glove.6B.200d.txt`` and fails with a message
naming the config key instead.
"""
import os.path as osp
from typing import Optional, Sequence

import numpy as np
import torch

GLOVE_URL = 'https://nlp.stanford.edu/projects/glove/'


def glove_file(glove_dir: str, dim: int = 200) -> str:
    """Path of the GloVe 6B text file of dimension ``dim`` inside ``glove_dir``."""
    return osp.join(glove_dir, f'glove.6B.{dim}d.txt')


def load_glove(glove_dir: str, words: Sequence[str], dim: int = 200,
               key: str = 'glove_dir') -> dict:
    """Read the vectors of ``words`` from the GloVe 6B text file.

    Streams the file once and keeps only the requested words, so no cache is needed.

    Args:
        glove_dir: folder holding ``glove.6B.<dim>d.txt``.
        words: the words to look up.
        dim: vector size (GloVe 6B ships 50, 100, 200, 300).
        key: the config key that named ``glove_dir``, quoted in errors.

    Returns:
        dict: word -> float32 numpy vector, for the words found.
    """
    path = glove_file(glove_dir, dim)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'GloVe vectors not found: {path} (config key `{key}`={glove_dir!r}). Download '
            f'glove.6B.zip (GloVe 6B, {dim}d) from {GLOVE_URL}, unzip glove.6B.{dim}d.txt into '
            f'that folder, or set `{key}` to the folder that holds it.')
    wanted = set(words)
    found = {}
    with open(path, 'rb') as f:
        for lineno, line in enumerate(f, 1):
            head, _, rest = line.partition(b' ')
            try:
                word = head.decode('utf-8')
            except UnicodeDecodeError:
                continue
            if word not in wanted:
                continue
            vec = np.array(rest.split(), dtype=np.float32)
            if vec.shape[0] != dim:
                raise ValueError(f'{path}:{lineno}: {vec.shape[0]} values for {word!r}, '
                                 f'expected {dim}; is `{key}` pointing at GloVe {dim}d?')
            found[word] = vec
            if len(found) == len(wanted):
                break
    return found


def class_name_vectors(names: Sequence[str], glove_dir: Optional[str], dim: int = 200,
                       key: str = 'glove_dir',
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One vector per class name, SGB's ``obj_edge_vectors`` rule.

    Args:
        names: class names (a name may hold several words, e.g. 'traffic light').
        glove_dir: folder of the GloVe text file; ``None`` gives N(0, 1) vectors (tests and
            synthetic data without word vectors).
        dim: vector size.
        key: the config key that named ``glove_dir``, quoted in errors.
        generator: torch generator for the random vectors.

    Returns:
        Tensor: float32 [len(names), dim].
    """
    vectors = torch.randn(len(names), dim, generator=generator)
    if glove_dir is None:
        return vectors
    tokens = set(names)
    for name in names:
        tokens.add(max(name.split(' '), key=len) if name.strip() else name)
    table = load_glove(glove_dir, sorted(tokens), dim=dim, key=key)
    for i, name in enumerate(names):
        vec = table.get(name)
        if vec is None and name.strip():
            # SGB: fall back to the longest word of a multi-word name.
            vec = table.get(max(name.split(' '), key=len))
        if vec is not None:
            vectors[i] = torch.from_numpy(vec)
    return vectors
