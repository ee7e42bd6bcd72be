"""`glag-extract`: stage one of GLAG. Train a backbone with a long-tail loss, dump the feature bank.

    glag-extract --dataset digits                       # the embedded demo, well under a minute on CPU
    glag-extract --dataset cifar10-jpeg --loss ce       # a baseline bank
    torchrun --nproc-per-node 4 -m glag.extract.cli --dataset imagenet-lt   # several GPUs

A rerun continues from the checkpoint beside the bank (--no-resume starts over).
"""
import click

from glag.cli.util import config_option, friendly_errors, version_option
from glag.extract.hostmem import keep_freed_memory
from glag.extract.options import apply_options


@click.command(context_settings={"max_content_width": 110})
@version_option
@config_option
@apply_options
@friendly_errors
def main(**options):
    """Train stage one on a long-tailed dataset and write its feature bank
    (runs/<dataset>-im<IM>/<loss>/seed<s>/bank.h5; see --out)."""
    from glag.extract.pipeline import run_extract   # torch: only once the options parsed
    keep_freed_memory()
    run_extract(options)


if __name__ == "__main__":
    main()
