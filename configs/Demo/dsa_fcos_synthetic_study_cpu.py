# DSA-FCOS on the embedded benchmark of the variant study: dsa_fcos_synthetic_cpu.py on the study's
# split (4000 training, 2000 validation images; see dsanet_conf_synthetic_study_cpu.py for the sizing).
from .dsa_fcos_synthetic_cpu import dataloader, lr_multiplier, model, optimizer, train

dataloader.synthetic.num_train = 4000
dataloader.synthetic.num_val = 2000
train.output_dir = "output/study_fcos"
