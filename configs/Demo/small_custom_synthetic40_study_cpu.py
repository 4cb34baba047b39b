# The measurement of the own-data CPU recipe (configs/Custom/dsanet_conf_small_custom_cpu.py) on a
# small split of the embedded synthetic shapes: 40 training images, the study's 2000 validation
# images (the same images as configs/Demo/dsanet_conf_synthetic_study_cpu.py's: an image depends only
# on the seed, its split and its index). The recipe set as a user would set it for this data: images
# resized to 96x96 (from 128x128, so that 2 seeds of both recipes fit an hour of a shared CPU; objects
# of 12-48 pixels, so the smallest anchor is 12), jitter x0.75 to x1.25 in training, and up-down flips
# on, as the shapes have no up and down. projects/DSANet/docs/CUSTOM_DATA.md#on-a-cpu has the study's command.
from ..Custom.dsanet_conf_small_custom_cpu import dataloader, lr_multiplier, model, optimizer, train

dataloader.synthetic.num_train = 40
dataloader.synthetic.num_val = 2000
dataloader.train.dataset.names = "synthetic_shapes_train"
dataloader.test.dataset.names = "synthetic_shapes_val"
model.num_classes = 3

dataloader.train.mapper.augmentations[0].short_edge_length = [72, 120]  # any size between (the recipe: 6 sizes)
dataloader.train.mapper.augmentations[0].sample_style = "range"
dataloader.train.mapper.augmentations[0].max_size = 160
dataloader.train.mapper.augmentations[3].prob = 0.5
dataloader.test.mapper.augmentations[0].short_edge_length = 96
dataloader.test.mapper.augmentations[0].max_size = 160
model.anchor_generator.sizes.smallest = 12

train.output_dir = "output/study_small_custom"
train.eval_epochs = 100  # 2 evaluations of the 2000 images (each costs about as much as 300 training iterations)
