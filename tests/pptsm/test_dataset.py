"""PaddleVideoDataset: lists with or without the suffix, clear errors, counted skips."""
import pytest

from ovkit.pptsm.dataset import PaddleVideoDataset


class Boom:
    """A pipeline step that fails for files whose name contains 'bad'."""

    def __call__(self, results):
        if 'bad' in results['filename']:
            raise ValueError(f'{results["filename"]}: cannot decode')
        return results


def make(tmp_path, lines, **kwargs):
    (tmp_path / 'videos').mkdir(exist_ok=True)
    ann = tmp_path / 'list.txt'
    ann.write_text(''.join(f'{ln}\n' for ln in lines))
    return PaddleVideoDataset(str(ann), [Boom()], data_prefix=dict(video=str(tmp_path / 'videos')),
                              suffix='.avi', **kwargs)


def test_suffix_is_added_only_where_missing(tmp_path):
    ds = make(tmp_path, ['a/v1 0', 'a/v2.avi 1'])
    names = [ds.get_data_info(i)['filename'] for i in range(2)]
    assert names == [str(tmp_path / 'videos/a/v1.avi'), str(tmp_path / 'videos/a/v2.avi')]
    assert [ds.get_data_info(i)['label'] for i in range(2)] == [0, 1]


def test_failures_are_skipped_and_counted(tmp_path):
    ds = make(tmp_path, ['bad1 0', 'good 1', 'bad2 2'])
    for _ in range(20):
        assert 'good' in ds[0]['filename']  # a bad sample draws another
    assert ds.num_skipped >= 20
    test = make(tmp_path, ['good 0', 'bad 1', 'good2 2'], test_mode=True)
    assert test[1]['filename'].endswith('good2.avi') and test.num_skipped == 1
    hopeless = make(tmp_path, ['bad 0'], max_skips=3)
    with pytest.raises(RuntimeError, match='4 videos in a row failed'):
        hopeless[0]


def test_missing_files_name_the_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match='dataset.ann_file'):
        PaddleVideoDataset(str(tmp_path / 'nope.txt'), [])
    (tmp_path / 'list.txt').write_text('a 0\n')
    with pytest.raises(FileNotFoundError, match='dataset.data_prefix.video'):
        PaddleVideoDataset(str(tmp_path / 'list.txt'), [], data_prefix=dict(video='/no/dir'))
    (tmp_path / 'empty.txt').write_text('')
    with pytest.raises(ValueError, match='lists no video'):
        PaddleVideoDataset(str(tmp_path / 'empty.txt'), [])
