"""Sweep grids shipped with GLAG (`glag-classify sweep --grid table6`); a JSON file of the same shape works too.

A grid is {"base": {...}, "grid": {key: [values]}, "runs": [{...}]}: every run is
base + one point of the product of `grid` + one entry of `runs`. Keys are run
options (underscored, e.g. "beta_step"). String values may use {dataset},
{runs_root} and {experiment} (<dataset>-im<IM>, glag.data.layout). Banks of different
stage-one losses sit side by side where `make features DATASET=<d> LOSS=<loss>` puts
them: runs/<dataset>-im<IM>/{ce,graloss,logit_adjust}/seed0/bank.h5.
"""
_BANK = "{runs_root}/{experiment}/%s/seed0/bank.h5"
_LOSSES = ("ce", "graloss", "logit_adjust")

GRIDS = {
    # Table 6: cRT, LWS and MiSLAS on banks from CE, GraLoss and logit-adjusted stage one (MiSLAS proper
    # wants banks trained with --mixup; on plain banks its run reports that).
    "table6": {"grid": {"bank": [_BANK % loss for loss in _LOSSES], "method": ["crt", "lws", "mislas"]}},
    # Table 7: the GLAG ablation (stage-one loss x AD x KD); each bank needs its own store.
    "table7": {"base": {"method": "glag"},
               "runs": [{"bank": _BANK % "ce", "ad": False, "kd": False},
                        {"bank": _BANK % "graloss", "ad": False, "kd": False},
                        {"bank": _BANK % "logit_adjust", "ad": False, "kd": False},
                        {"bank": _BANK % "graloss", "ad": True, "kd": False},
                        {"bank": _BANK % "logit_adjust", "ad": True, "kd": True},
                        {"bank": _BANK % "ce", "ad": True, "kd": True},
                        {"bank": _BANK % "graloss", "ad": True, "kd": True}]},
    # Every decoupled head on the one bank of the current dataset.
    "heads": {"grid": {"method": ["crt", "lws", "tau_norm", "ncm", "posthoc_la", "mislas", "glag"]}},
    # beta and gamma of GLAG on one bank.
    "glag-beta": {"base": {"method": "glag"},
                  "grid": {"beta_init": [0.2, 0.4, 0.6, 0.8], "ad": [True, False], "gamma": [0.0, 0.1]}},
}
