"""ovkit: OpenMMLab plugin modules (BARON, SGG, PP-TSM, ViT, accuracy comparison).

Install with `make install` (it builds mmcv with ops and pins torch); `pip install -e .` alone
assumes that stack is already present.
"""
import os.path as osp
import re

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_requirements(name):
    """Requirement lines of requirements/<name>, comments and blanks dropped."""
    reqs = []
    with open(osp.join(HERE, 'requirements', name)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line:
                reqs.append(line)
    return reqs


def read_version():
    with open(osp.join(HERE, 'ovkit', 'version.py')) as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


setup(
    name='ovkit',
    version=read_version(),
    description='OpenMMLab plugin library: open-vocabulary detection (BARON), scene graphs, '
    'PP-TSM, ViT and layer-by-layer accuracy comparison',
    packages=find_packages(include=['ovkit', 'ovkit.*']),
    python_requires='>=3.10',
    # torch is deliberately loose: a GPU user's own CUDA build is respected; `make install`
    # pins the tested pair from requirements/torch.txt when no compatible torch is present.
    install_requires=['torch>=2.1', 'torchvision'] + read_requirements('mminstall.txt') +
    read_requirements('runtime.txt'),
    extras_require=dict(
        tests=read_requirements('tests.txt'), optional=read_requirements('optional.txt')),
    # Shipped lists and templates (ovkit.metadata's resolver finds them in a wheel install too).
    package_data={'ovkit.metadata': ['*.txt', '*.json', '*.csv']},
    zip_safe=False,
)
