# configs/baron/shapes.py with BARON's ensemble head (the reference's baron_kd_ens config for
# OV-LVIS): the bag and single-region losses train a KD branch of their own, and at test time
# novel classes are scored p^(1/3) q^(2/3) from the classification head (p) and the KD branch
# (q), base classes p^(2/3) q^(1/3) (ovkit.baron.EnsembleBaronConvFCBBoxHead). The tiny
# example of that head; it does not help here (seed 0: novel / base AP50 4.8 / 23.4 against
# shapes.py's 36.4 / 99.0: the main head, which no bag loss reaches, behaves as the ablation's;
# docs/baron.md).
#   tools/dist_train.sh configs/baron/shapes_ens.py 2
_base_ = ['./shapes.py']

model = dict(
    roi_head=dict(
        bbox_head=dict(
            type='EnsembleBaronShared2FCBBoxHead',
            ensemble_factor=2.0 / 3.0,
            kd_head=dict(type='BaronShared2FCBBoxHead', in_channels=32, roi_feat_size=7,
                         fc_out_channels={{_base_.fc}}))))
