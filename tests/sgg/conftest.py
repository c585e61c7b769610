import pytest

from tests.conftest import in_default_scope


@pytest.fixture(autouse=True)
def _mmdet_scope():
    yield from in_default_scope('mmdet')
