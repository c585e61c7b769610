# BARON on OV-LVIS with the ensemble head: the reference's
# baron_kd_ens_mask_rcnn_r50_fpn_syncbn_45kx4_lvis.py on top of configs/baron/lvis.py. The bag
# and single-region losses train a KD branch of their own (four convs and one fc, SyncBN,
# initialised from the SOCO checkpoint's box head as the main head is); at test time rare
# (novel) classes are scored p^(1/3) q^(2/3) from the classification head (p) and the KD
# branch (q), the other classes and the background p^(2/3) q^(1/3)
# (ovkit.baron.EnsembleBaronConvFCBBoxHead). Files and commands: configs/baron/lvis.py.
#   tools/dist_train.sh configs/baron/lvis_ens.py 16 [--auto-scale-lr]
_base_ = ['./lvis.py']

model = dict(
    roi_head=dict(
        bbox_head=dict(
            type='EnsembleBaronShared4Conv1FCBBoxHead',
            ensemble_factor=2.0 / 3.0,
            kd_head=dict(
                type='BaronShared4Conv1FCBBoxHead',
                in_channels=256,
                fc_out_channels=1024,
                roi_feat_size=7,
                with_reg=False,
                norm_cfg={{_base_.norm_cfg}},
                norm_eval=False,
                init_cfg=dict(type='Pretrained', prefix='roi_head.bbox_head',
                              checkpoint={{_base_.load_from}})))))
