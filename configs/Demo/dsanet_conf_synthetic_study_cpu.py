# The embedded benchmark of the variant study (`make study`): the demo recipe on a larger split of the
# synthetic shapes, sized by measurement (projects/DSANet/docs/STUDIES.md, "Sizing the embedded benchmark"):
# 2000 validation images put one model's bootstrap std of AP under 0.5 (100 images: about 2),
# 4000 training images are seen 6 times in 3000 iterations instead of 40 times.
from .dsanet_conf_synthetic_cpu import dataloader, lr_multiplier, model, optimizer, train

dataloader.synthetic.num_train = 4000
dataloader.synthetic.num_val = 2000
train.output_dir = "output/study"
