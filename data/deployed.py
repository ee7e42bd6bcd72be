"""The deployable-model format: written by classify (model.pt), read by glag.extract.backbones.load_deployed.

It lives in data/ because neither stage may import the other.
"""
FORMAT = "glag-deployed/1"
STAGE_ONE_FORMAT = "glag-stage1-ckpt/1"   # extract/checkpoint.py's per-epoch checkpoints
