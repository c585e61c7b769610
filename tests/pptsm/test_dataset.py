"""PaddleVideoDataset: lists with or without the suffix, clear errors, skips (shared)."""
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


def test_failures_are_skipped_by_the_shared_mechanism(tmp_path):
    """ovkit.engine wraps the pipeline as tools/train.py does: a bad video draws another."""
    from ovkit.engine.skips import SKIP_KEY, TooManyBadSamplesError, protect
    ds = make(tmp_path, ['bad1 0', 'good 1', 'bad2 2'])
    protect(ds)
    records = []
    for _ in range(20):
        sample = ds[0]
        assert 'good' in sample['filename']  # a bad sample draws another
        records += [r for r in sample[SKIP_KEY].split('\n') if r]
    assert len(records) >= 20 and all('ValueError' in r and 'cannot decode' in r
                                      for r in records)
    test = make(tmp_path, ['good 0', 'bad 1', 'good2 2'], test_mode=True)
    protect(test)
    stand_in = test[1]  # the next video stands in, marked to be left out of the metrics
    assert stand_in['filename'].endswith('good2.avi') and 'bad.avi' in stand_in[SKIP_KEY]
    hopeless = make(tmp_path, ['bad 0'])
    protect(hopeless, max_consecutive=4)
    with pytest.raises(TooManyBadSamplesError, match='4 samples in a row failed'):
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


def test_labels_are_checked_against_num_classes_at_build(tmp_path):
    """A label >= num_classes used to fail mid-training inside MixupBlending's one-hot."""
    lines = ['a 0', '', 'b 3', 'c 4', 'd 1']
    with pytest.raises(ValueError, match=r'list.txt \(dataset.ann_file\) line 4: label 4 of '
                       r"'c 4' is not in 0..3: the config has num_classes=4 "
                       r'\(model.cls_head.num_classes'):
        make(tmp_path, lines, num_classes=4)
    ds = make(tmp_path, lines, num_classes=5)  # blank lines are skipped
    assert [ds.get_data_info(i)['label'] for i in range(len(ds))] == [0, 3, 4, 1]
    with pytest.raises(ValueError, match=r"line 1: label -1 of 'a -1' is not in 0..3"):
        make(tmp_path, ['a -1'], num_classes=4)
    with pytest.raises(ValueError, match=r"line 2: label 'x' of 'b x' is not an integer"):
        make(tmp_path, ['a 0', 'b x'])
    with pytest.raises(ValueError, match="line 1: 'a' has no label"):
        make(tmp_path, ['a'])
    assert make(tmp_path, ['a'], test_mode=True).get_data_info(0)['label'] == -1


def test_parsing_matches_mmaction_video_dataset(tmp_path):
    """Apart from the suffix and the checks, the data list is mmaction2's own."""
    from mmaction.datasets import VideoDataset
    lines = ['x/a.avi 2', 'y/b.avi 0', 'z/c.avi 1']
    ours = make(tmp_path, lines, num_classes=3)
    theirs = VideoDataset(str(tmp_path / 'list.txt'), [],
                          data_prefix=dict(video=str(tmp_path / 'videos')))
    keys = ('filename', 'label')
    assert [{k: ours.get_data_info(i)[k] for k in keys} for i in range(3)] == \
        [{k: theirs.get_data_info(i)[k] for k in keys} for i in range(3)]
