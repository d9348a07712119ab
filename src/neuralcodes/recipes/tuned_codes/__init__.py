"""Retrieval-tuned codes (Radenovic, Tolias & Chum, the cirtorch recipe) on the course protocol.

config.py      TunedConfig (fine-tuning) and ClassifierConfig (a 64x64 ResNet-18 classifier from scratch)
classifier.py  train / load the ResNet-18 (or tiny) classifier of the in-domain classes
base.py        open what fine-tuning starts from: a classifier run or ImageNet EfficientNet-Lite0
network.py     RetrievalNet: feature map -> GeM -> (whitening) -> L2 normalisation
augment.py     on-device batch augmentation: resized crop, flip, rotation, tilt, colour jitter
train.py       metric-learning fine-tuning (loss, miner, m-per-class batches and triplet figures from
               learning/), model selection on in-domain validation mAP, resumable
variants.py    codes of every compared variant (classification layers, poolings, whitenings, tuned runs)
compare.py     the comparison table on the held-out classes, paired bootstrap, t-SNE figures
"""
