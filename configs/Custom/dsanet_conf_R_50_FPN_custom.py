# DSANet-Conf R50-FPN on any COCO-format dataset, set from the command line:
#
#   train_net.py --config-file configs/Custom/dsanet_conf_R_50_FPN_custom.py --num-gpus 8 \
#       datasets.custom_train.json_file=/data/train.json datasets.custom_train.image_root=/data/train \
#       datasets.custom_val.json_file=/data/val.json datasets.custom_val.image_root=/data/val \
#       model.num_classes=5
#
# Class names come from the json's categories. Images without annotations are skipped in
# training and kept in evaluation; degenerate boxes (zero width or height) are dropped.
from detectron2.config import LazyConfig

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "../COCO-Detection/dsanet_conf_R_50_FPN_1x.py", ("dataloader", "lr_multiplier", "model", "optimizer", "train"))

datasets = dict(
    custom_train=dict(json_file="", image_root=""),
    custom_val=dict(json_file="", image_root=""),
)
dataloader.train.dataset.names = "custom_train"
dataloader.test.dataset.names = "custom_val"
model.num_classes = 80  # set to the number of categories in your json
