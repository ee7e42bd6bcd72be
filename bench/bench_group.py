"""N stage-one runs at once: one grouped step (glag.extract.group) vs N separate steps vs vmap, images/s.

Synthetic 32x32 RGB batches (the step's cost does not depend on pixel values), ResNet-32, SGD with
momentum and weight decay, forward + backward + update, the way glag.extract.group_trainer and
glag.extract.trainer step (channels_last; bf16 autocast on CUDA as glag-extract's default there):

  separate   N Classifiers, each stepped alone with its own SGD, one after another
  grouped    one GroupedClassifier of the N, one SGD, the sum of the N losses
  vmap       the N models' stacked parameters and buffers (torch.func.stack_module_state) through
             vmap(functional_call), one SGD over the stacked tensors, the sum of the N losses

Reported: the median over `--rounds` rounds of `--steps` steps each, as aggregate images/s (N x batch
per step) and the grouped/separate ratio. On a GPU, where ResNet-32 is bound by kernel launches, the
grouped step should approach N x the single-run rate; on a CPU the work is the same FLOPs either way,
so the figure shows the overhead (or saving) of the grouped layout, not the GPU gain.
Writes bench/results/group.json and group.md.

    python bench/bench_group.py --device cpu --threads 1 --batch-size 32 --groups 1,2,4
    python bench/bench_group.py --device cuda --batch-size 128 --groups 1,4,8,15
"""
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import click
import torch
import torch.nn.functional as F

from torch.func import functional_call, stack_module_state, vmap

from glag.data.provenance import code_version
from glag.extract.backbones import Classifier, build_backbone
from glag.extract.group import GroupedClassifier

RESULTS = Path(__file__).resolve().parent / "results"


def make_models(n: int, backbone: str, device) -> list:
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(Classifier(build_backbone(backbone, 3, 32), 10).to(device, memory_format=torch.channels_last))
    return out


def sgd(model):
    return sgd_params(model.parameters())


def rate(step, n_images: int, steps: int, rounds: int, device) -> float:
    """Median images/s over rounds (one warm-up round first, for cuDNN's autotuning and allocations)."""
    rates = []
    for r in range(rounds + 1):
        sync(device)
        started = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        if r:
            rates.append(n_images * steps / (time.perf_counter() - started))
    return statistics.median(rates)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(n: int, args, device) -> dict:
    B, amp = args["batch_size"], device.type == "cuda"
    xs = [torch.randn(B, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last) for _ in range(n)]
    ys = [torch.randint(0, 10, (B,), device=device) for _ in range(n)]
    models = make_models(n, args["backbone"], device)
    opts = [sgd(m) for m in models]

    def separate():
        for m, o, x, y in zip(models, opts, xs, ys):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = m(x)
            o.zero_grad(set_to_none=True)
            F.cross_entropy(logits.float(), y).backward()
            o.step()

    grouped_net = GroupedClassifier(models).to(device, memory_format=torch.channels_last)
    grouped_opt, x_all = sgd(grouped_net), torch.cat(xs, 1).contiguous(memory_format=torch.channels_last)

    def grouped():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = grouped_net(x_all)                                         # (N, B, C)
        grouped_opt.zero_grad(set_to_none=True)
        sum(F.cross_entropy(z.float(), y) for z, y in zip(logits, ys)).backward()
        grouped_opt.step()

    vmapped = vmap_step(models, xs, ys, amp, device)
    sep = rate(separate, n * B, args["steps"], args["rounds"], device)
    grp = rate(grouped, n * B, args["steps"], args["rounds"], device)
    vm = rate(vmapped, n * B, args["steps"], args["rounds"], device)
    return {"n": n, "separate_img_s": round(sep, 1), "grouped_img_s": round(grp, 1), "vmap_img_s": round(vm, 1),
            "ratio": round(grp / sep, 3), "vmap_ratio": round(vm / sep, 3)}


def vmap_step(models, xs, ys, amp: bool, device):
    """The torch.func alternative: one vmapped functional model over stacked parameters and buffers."""
    params, buffers = stack_module_state(models)           # (N, ...) leaves; BN running stats update in place
    base = copy.deepcopy(models[0]).to("meta")
    opt, x, y = sgd_params(params.values()), torch.stack(xs), torch.stack(ys)     # (N, B, Cin, H, W), (N, B)
    forward = vmap(lambda p, b, xi: functional_call(base, (p, b), (xi,)))

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = forward(params, buffers, x)                                   # (N, B, C)
        opt.zero_grad(set_to_none=True)
        sum(F.cross_entropy(z.float(), t) for z, t in zip(logits, y)).backward()
        opt.step()
    return step


def sgd_params(params):
    return torch.optim.SGD(list(params), lr=0.01, momentum=0.9, weight_decay=5e-4)


def markdown(rows: list, meta: dict) -> str:
    lines = [f"# N runs at once: grouped vs separate steps ({meta['device_name']})", "",
             f"{meta['backbone']}, batch {meta['batch_size']} per run, 32x32, "
             f"{meta['threads']} thread(s), median of {meta['rounds']} rounds of {meta['steps']} steps; "
             f"{meta['code_version']}", "",
             "| runs N | N separate steps, images/s | one grouped step | grouped / separate | vmap step "
             "| vmap / separate |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['n']} | {r['separate_img_s']:,.0f} | {r['grouped_img_s']:,.0f} | {r['ratio']:.2f}x "
              f"| {r['vmap_img_s']:,.0f} | {r['vmap_ratio']:.2f}x |" for r in rows]
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="CPU threads (0 = torch's default).")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Images per run and step.")
@click.option("--groups", default="1,2,4", show_default=True, help="Group sizes N to measure.")
@click.option("--steps", type=int, default=3, show_default=True, help="Steps per round.")
@click.option("--rounds", type=int, default=3, show_default=True, help="Timed rounds (after one warm-up).")
@click.option("--backbone", default="resnet32", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=str(RESULTS), show_default=True)
def main(device, threads, batch_size, groups, steps, rounds, backbone, out):
    """Measure one grouped step of N runs (and a vmapped one) against N separate steps."""
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)                       # as glag-extract does on the CPU
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    args = dict(batch_size=batch_size, steps=steps, rounds=rounds, backbone=backbone)
    rows = []
    for n in (int(x) for x in groups.split(",")):
        rows.append(measure(n, args, dev))
        click.echo(json.dumps(rows[-1]), err=True)
    meta = dict(args, threads=torch.get_num_threads(), code_version=code_version(), torch=torch.__version__,
                device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "group.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (folder / "group.md").write_text(markdown(rows, meta))
    click.echo(markdown(rows, meta))


if __name__ == "__main__":
    main()
