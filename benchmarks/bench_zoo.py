"""Real architectures: polyparam's per-tensor and per-call cost against each framework's own way.

Per model and operation: polyparam's time over the native way's, measured in the same run
(best of --repeat, ours and native alternating). Models, random weights, nothing downloaded:

    torch  GPT-2 small (transformers.GPT2Config()), BERT-base (BertConfig()), a ResNet50 shaped
           like torchvision's (written below)
    keras  keras.applications ResNet50, MobileNetV2, EfficientNetB0 (weights=None), on the Keras
           backend KERAS_BACKEND names (TensorFlow by default; KERAS_BACKEND=torch for Keras on torch)
    mxnet  gluon model_zoo resnet50_v1, mobilenet1.0, after one forward with MKLDNN on
    flax   NNX has no zoo: a GPT-2 small with HF's names and a ResNet50 with torchvision's, written here

Operations (native way in brackets):

    tree+items   pp.tree(m).items()              [named_parameters() / m.weights / collect_params() / nnx.state]
    state        tree.state()                    [state_dict() / get_weights() / asnumpy() of each / nnx.state]
    load_state   tree.load_state(s)              [load_state_dict() / set_weights() / set_data() of each / nnx.update]
    initialize   tree.initialize(Xavier, seed)   [nn.init loop / initializer + assign loop / net.initialize]
    save         pp.save(tree, f)                [safetensors save_file + one fsync]
    load         pp.load(tree, f)                [safetensors load_file + the native write]
    transfer     pp.transfer(m, m2)              [the native write of the native read]

Then a scale curve per backend: 10, 100, 1,000 and 10,000 tensors of one fixed total size,
for tree build, state() and load_state(), with the time per tensor and the fixed per-call
cost (a least-squares line through the four points).

Targets (issue 19): state/load_state <= 1.1x, initialize <= 1.0x, tree+items <= 2x (or under
1 ms per 100 tensors), save <= 1.2x, load <= 1.1x, transfer <= 1.1x.

Run: python benchmarks/bench_zoo.py [--quick] [--backend torch|keras|mxnet|flax|numpy] [--no-curve]
     KERAS_BACKEND=torch python benchmarks/bench_zoo.py --backend keras --no-curve
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import sys
import tempfile
import time
import warnings
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import polyparam as pp  # noqa: E402

TARGETS = {"tree+items": 2.0, "state": 1.1, "load_state": 1.1, "initialize": 1.0, "save": 1.2, "load": 1.1,
           "transfer": 1.1}
Row = tuple[str, Callable[[], Any], Callable[[], Any]]


def best_of(fns: list[Callable[[], Any]], repeat: int) -> list[float]:
    """Best time of each of ``fns``, called in turn ``repeat`` times, after one warm-up call of each."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            gc.collect()
            start = time.perf_counter()
            result = fn()
            best[i] = min(best[i], time.perf_counter() - start)
            del result
    return best


def paired(ours: Callable[[], Any], native: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Best times of ``ours`` and ``native``, alternating, after one warm-up call of each."""
    t_native, t_ours = best_of([native, ours], repeat)
    return t_ours, t_native


def with_undo(keep: Callable[[], Any], write: Callable[[], Any]) -> Callable[[], Any]:
    """The native write made all or nothing, as polyparam's writes are: ``keep()`` (a copy of every value
    the write replaces, what an undo needs) first. The floor of a write that can be undone."""
    def run() -> Any:
        kept = keep()
        write()
        return kept
    return run


def atomically(save: Callable[..., None], target: str) -> Callable[[], None]:
    """``save(native_file=...)`` (which fsyncs the file it writes) made atomic and durable as ``pp.save`` is: into a
    temporary file beside ``target``, renamed over it, the folder synced. The floor of a save that never leaves a
    half-written file."""
    def run() -> None:
        temporary = target + ".partial"
        save(native_file=temporary)
        os.replace(temporary, target)
        fsync_file(os.path.dirname(target) or ".")
    return run


def run_rows(label: str, n_tensors: int, n_params: int, rows: list[Row], repeat: int,
             floors: dict[str, Callable[[], Any]] | None = None, floor_labels: dict[str, str] | None = None) -> None:
    """Print each row's ratio; ``floors`` adds the native way with polyparam's guarantee: an undo copy before a write
    (:func:`with_undo`), an atomic, durable file for a save (:func:`atomically`); ``floor_labels`` names a floor that
    is neither."""
    label_of = floor_labels or {}
    print(f"{label}: {n_params / 1e6:.1f}M parameters in {n_tensors} tensors, best of {repeat}", flush=True)
    for name, ours, native in rows:
        floor = (floors or {}).get(name)
        times = best_of([native, ours] if floor is None else [native, ours, floor], repeat)
        t_native, t_ours = times[0], times[1]
        ratio = t_ours / t_native if t_native > 0 else float("inf")
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            met = ratio <= target or (name == "tree+items" and t_ours * 1e3 < n_tensors / 100)
            verdict = "  ok" if met else f"  over {target}x"
        what = "atomic native save" if name == "save" else label_of.get(name, "native + undo copy")
        extra = "" if floor is None else f"   ({what} {times[2] * 1e3:.2f} ms: {t_ours / times[2]:.2f}x of it)"
        print(f"  {name:<11} {t_ours * 1e3:9.2f} ms vs {t_native * 1e3:9.2f} ms native = {ratio:6.2f}x{verdict}{extra}",
              flush=True)


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pp_rows(tree_of: Callable[[], Any], model: Any, model2: Any, folder: str, sync: Callable[[], None]) -> dict:
    """polyparam's side of every row (``sync`` waits for an asynchronous framework)."""
    tree = tree_of()
    state = tree.state(copy=True)
    target = os.path.join(folder, "pp.safetensors")
    pp.save(tree, target)

    def save() -> None:
        pp.save(tree, target)

    def call(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            out = fn()
            sync()
            return out
        return run

    return {"tree+items": lambda: tree_of().items(),
            "state": call(tree.state),
            "load_state": call(lambda: tree.load_state(state)),
            "initialize": call(lambda: tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)),
            "save": call(save),
            "load": call(lambda: pp.load(tree, target)),
            "transfer": call(lambda: pp.transfer(model, model2))}


# ---------------------------------------------------------------- torch

def torch_resnet50(width: int = 64, blocks: tuple[int, ...] = (3, 4, 6, 3)) -> Any:
    """A ResNet50 with torchvision's module names and shapes (conv1, bn1, layer1..4, fc)."""
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, inplanes: int, planes: int, stride: int, downsample: bool) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = (nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                             nn.BatchNorm2d(planes * 4)) if downsample else None)

        def forward(self, x: Any) -> Any:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu(out + (x if self.downsample is None else self.downsample(x)))

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            inplanes = width
            for i, count in enumerate(blocks):
                planes, stride = width * 2 ** i, 1 if i == 0 else 2
                layers = []
                for j in range(count):
                    layers.append(Bottleneck(inplanes, planes, stride if j == 0 else 1, j == 0))
                    inplanes = planes * 4
                setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(inplanes, 1000)

        def forward(self, x: Any) -> Any:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for i in range(len(blocks)):
                x = getattr(self, f"layer{i + 1}")(x)
            return self.fc(self.avgpool(x).flatten(1))

    return ResNet()


def torch_models(quick: bool) -> dict[str, Callable[[], Any]]:
    import transformers

    transformers.logging.set_verbosity_error()
    small = {"n_layer": 2, "n_embd": 128, "n_head": 2, "vocab_size": 1000} if quick else {}
    bert = ({"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 256,
             "vocab_size": 1000} if quick else {})
    return {"GPT-2 small": lambda: transformers.GPT2Model(transformers.GPT2Config(**small)),
            "BERT-base": lambda: transformers.BertModel(transformers.BertConfig(**bert)),
            "ResNet50 (torchvision's shape)": lambda: torch_resnet50(16 if quick else 64)}


def bench_torch(quick: bool, repeat: int, folder: str) -> None:
    import torch
    from safetensors.torch import load_file, save_file
    from torch import nn

    torch.manual_seed(0)
    print(f"== torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    for label, build in torch_models(quick).items():
        model, model2 = build().eval(), build().eval()
        ours = pp_rows(lambda model=model: pp.tree(model), model, model2, folder, lambda: None)
        native_file = os.path.join(folder, "native.safetensors")
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}  # not the model's own tensors

        def native_init(model: Any = model) -> None:
            with torch.no_grad():
                for _, p in model.named_parameters():
                    if p.dim() >= 2:
                        nn.init.xavier_uniform_(p)
                    else:
                        nn.init.zeros_(p)

        def native_save(sd: dict = sd, native_file: str = native_file) -> None:
            save_file(sd, native_file)
            fsync_file(native_file)

        native_save()
        native = {"tree+items": lambda model=model: list(model.named_parameters()),
                  "state": lambda model=model: {k: v.numpy() for k, v in model.state_dict().items()},
                  "load_state": lambda model=model, sd=sd: model.load_state_dict(sd),
                  "initialize": native_init,
                  "save": native_save,
                  "load": lambda model=model, native_file=native_file: model.load_state_dict(load_file(native_file)),
                  "transfer": lambda model=model, model2=model2: model2.load_state_dict(model.state_dict())}
        def keep(model: Any) -> dict:
            return {k: v.clone() for k, v in model.state_dict().items()}

        floors = {name: with_undo(functools.partial(keep, model2 if name == "transfer" else model), native[name])
                  for name in ("load_state", "initialize", "load", "transfer")}
        floors["save"] = atomically(native_save, native_file)
        params = list(model.parameters())
        run_rows(label, len(params), sum(p.numel() for p in params),
                 [(k, ours[k], native[k]) for k in ours], repeat, floors)


# ---------------------------------------------------------------- keras

def bench_keras(quick: bool, repeat: int, folder: str) -> None:
    import keras
    from safetensors.numpy import load_file, save_file

    print(f"== keras {keras.__version__} on {keras.backend.backend()}", flush=True)
    apps = keras.applications
    size = (96, 96, 3) if quick else None
    builders: dict[str, Callable[[], Any]] = {
        "ResNet50": lambda: apps.ResNet50(weights=None, input_shape=size),
        "MobileNetV2": lambda: apps.MobileNetV2(weights=None, input_shape=size, alpha=0.35 if quick else 1.0),
        "EfficientNetB0": lambda: apps.EfficientNetB0(weights=None, input_shape=size)}
    if quick:
        builders = {"MobileNetV2": builders["MobileNetV2"]}
    for label, build in builders.items():
        model, model2 = build(), build()
        ours = pp_rows(lambda model=model: pp.tree(model), model, model2, folder, lambda: None)
        weights = model.get_weights()
        glorot = keras.initializers.GlorotUniform(seed=0)
        zeros = keras.initializers.Zeros()
        native_file = os.path.join(folder, "native.safetensors")
        paths = [v.path for v in model.weights]

        def native_init(model: Any = model, glorot: Any = glorot, zeros: Any = zeros) -> None:
            for v in model.weights:
                v.assign((glorot if len(v.shape) >= 2 else zeros)(v.shape, v.dtype))

        def native_save(model: Any = model, paths: list = paths, native_file: str = native_file) -> None:
            # the values read, as pp.save reads them
            save_file({k: np.asarray(w) for k, w in zip(paths, model.get_weights())}, native_file)
            fsync_file(native_file)

        def native_load(model: Any = model, native_file: str = native_file) -> None:
            loaded = load_file(native_file)
            model.set_weights([loaded[v.path] for v in model.weights])

        native_save()
        native = {"tree+items": lambda model=model: [(v.path, v) for v in model.weights],
                  "state": model.get_weights,
                  "load_state": lambda model=model, weights=weights: model.set_weights(weights),
                  "initialize": native_init,
                  "save": native_save,
                  "load": native_load,
                  "transfer": lambda model=model, model2=model2: model2.set_weights(model.get_weights())}
        floors = {name: with_undo((model2 if name == "transfer" else model).get_weights, native[name])
                  for name in ("load_state", "initialize", "load", "transfer")}
        floors["save"] = atomically(native_save, native_file)
        run_rows(label, len(model.weights), model.count_params(), [(k, ours[k], native[k]) for k in ours], repeat,
                 floors)


# ---------------------------------------------------------------- mxnet

def import_mxnet() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import mxnet as mx
    return mx


def bench_mxnet(quick: bool, repeat: int, folder: str) -> None:
    mx = import_mxnet()
    from mxnet.gluon.model_zoo import vision
    from safetensors.numpy import load_file, save_file

    print(f"== mxnet {mx.__version__} (MKLDNN {os.environ.get('MXNET_MKLDNN_ENABLED', '1')})", flush=True)
    side = 64 if quick else 224
    builders: dict[str, Callable[[], Any]] = {"resnet50_v1": vision.resnet50_v1, "mobilenet1.0": vision.mobilenet1_0}
    if quick:
        builders = {"mobilenet0.25": vision.mobilenet0_25}

    def built(make: Callable[[], Any]) -> Any:
        net = make()
        net.initialize(mx.init.Xavier())
        net(mx.nd.ones((1, 3, side, side)))
        mx.nd.waitall()
        return net

    for label, make in builders.items():
        net, net2 = built(make), built(make)
        ours = pp_rows(lambda net=net: pp.tree(net), net, net2, folder, mx.nd.waitall)
        params = list(net.collect_params().values())
        params2 = list(net2.collect_params().values())
        state = [p.data().asnumpy() for p in params]
        native_file = os.path.join(folder, "native.safetensors")

        def waited(fn: Callable[[], Any]) -> Callable[[], Any]:
            def run() -> Any:
                out = fn()
                mx.nd.waitall()
                return out
            return run

        def native_write(values: list, params: list = params) -> None:
            for p, v in zip(params, values):
                p.set_data(mx.nd.array(v, dtype=v.dtype))

        def native_save(params: list = params, native_file: str = native_file) -> None:
            save_file({p.name: p.data().asnumpy() for p in params}, native_file)
            fsync_file(native_file)

        def native_load(params: list = params, native_file: str = native_file) -> None:
            loaded = load_file(native_file)
            native_write([loaded[p.name] for p in params])

        def native_transfer(params: list = params, params2: list = params2) -> None:
            for p, q in zip(params, params2):
                q.set_data(p.data())

        native_save()
        native = {"tree+items": lambda net=net: list(net.collect_params().items()),
                  "state": waited(lambda params=params: [p.data().asnumpy() for p in params]),
                  "load_state": waited(lambda state=state: native_write(state)),
                  "initialize": waited(lambda net=net: net.initialize(mx.init.Xavier(), force_reinit=True)),
                  "save": waited(native_save),
                  "load": waited(native_load),
                  "transfer": waited(native_transfer)}
        def keep_values(params: list) -> list:
            return [p.data().asnumpy() for p in params]

        floors = {name: with_undo(functools.partial(keep_values, params2 if name == "transfer" else params),
                                  native[name])
                  for name in ("load_state", "initialize", "load", "transfer")}
        floors["save"] = waited(atomically(native_save, native_file))
        run_rows(label, len(params), sum(int(np.prod(p.shape)) for p in params),
                 [(k, ours[k], native[k]) for k in ours], repeat, floors)


# ---------------------------------------------------------------- flax

def flax_models(quick: bool) -> dict[str, Callable[[], Any]]:
    """Flax NNX has no model zoo: a ResNet50 with torchvision's names and shapes and a GPT-2 small with HF's,
    written here in NNX (channels last, as NNX stores them)."""
    from flax import nnx

    class Bottleneck(nnx.Module):
        def __init__(self, inplanes: int, planes: int, stride: int, downsample: bool, rngs: nnx.Rngs) -> None:
            self.conv1 = nnx.Conv(inplanes, planes, (1, 1), use_bias=False, rngs=rngs)
            self.bn1 = nnx.BatchNorm(planes, rngs=rngs)
            self.conv2 = nnx.Conv(planes, planes, (3, 3), strides=stride, padding=1, use_bias=False, rngs=rngs)
            self.bn2 = nnx.BatchNorm(planes, rngs=rngs)
            self.conv3 = nnx.Conv(planes, planes * 4, (1, 1), use_bias=False, rngs=rngs)
            self.bn3 = nnx.BatchNorm(planes * 4, rngs=rngs)
            self.downsample = (nnx.Sequential(nnx.Conv(inplanes, planes * 4, (1, 1), strides=stride, use_bias=False,
                                                       rngs=rngs), nnx.BatchNorm(planes * 4, rngs=rngs))
                               if downsample else None)

        def __call__(self, x: Any) -> Any:
            out = nnx.relu(self.bn1(self.conv1(x)))
            out = nnx.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return nnx.relu(out + (x if self.downsample is None else self.downsample(x)))

    class ResNet(nnx.Module):
        def __init__(self, width: int, blocks: tuple[int, ...] = (3, 4, 6, 3)) -> None:
            rngs = nnx.Rngs(0)
            self.conv1 = nnx.Conv(3, width, (7, 7), strides=2, padding=3, use_bias=False, rngs=rngs)
            self.bn1 = nnx.BatchNorm(width, rngs=rngs)
            inplanes, stages = width, []
            for i, count in enumerate(blocks):
                planes, stride = width * 2 ** i, 1 if i == 0 else 2
                layers = []
                for j in range(count):
                    layers.append(Bottleneck(inplanes, planes, stride if j == 0 else 1, j == 0, rngs))
                    inplanes = planes * 4
                stages.append(nnx.List(layers))
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.fc = nnx.Linear(inplanes, 1000, rngs=rngs)

        def __call__(self, x: Any) -> Any:
            x = nnx.max_pool(nnx.relu(self.bn1(self.conv1(x))), (3, 3), (2, 2), "SAME")
            for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
                for block in stage:
                    x = block(x)
            return self.fc(x.mean(axis=(1, 2)))

    class Attention(nnx.Module):
        def __init__(self, d: int, rngs: nnx.Rngs) -> None:
            self.c_attn = nnx.Linear(d, 3 * d, rngs=rngs)
            self.c_proj = nnx.Linear(d, d, rngs=rngs)

    class MLP(nnx.Module):
        def __init__(self, d: int, rngs: nnx.Rngs) -> None:
            self.c_fc = nnx.Linear(d, 4 * d, rngs=rngs)
            self.c_proj = nnx.Linear(4 * d, d, rngs=rngs)

    class Block(nnx.Module):
        def __init__(self, d: int, rngs: nnx.Rngs) -> None:
            self.ln_1 = nnx.LayerNorm(d, rngs=rngs)
            self.attn = Attention(d, rngs)
            self.ln_2 = nnx.LayerNorm(d, rngs=rngs)
            self.mlp = MLP(d, rngs)

    class GPT2(nnx.Module):
        def __init__(self, n_layer: int, d: int, vocab: int, positions: int) -> None:
            rngs = nnx.Rngs(0)
            self.wte = nnx.Embed(vocab, d, rngs=rngs)
            self.wpe = nnx.Embed(positions, d, rngs=rngs)
            self.h = nnx.List([Block(d, rngs) for _ in range(n_layer)])
            self.ln_f = nnx.LayerNorm(d, rngs=rngs)

    gpt = (2, 128, 1000, 256) if quick else (12, 768, 50257, 1024)
    return {"GPT-2 small (HF's names)": lambda: GPT2(*gpt),
            "ResNet50 (torchvision's shape)": lambda: ResNet(16 if quick else 64)}


def bench_flax(quick: bool, repeat: int, folder: str) -> None:
    import flax
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from safetensors.numpy import load_file, save_file

    print(f"== flax {flax.__version__} (NNX), jax {jax.__version__} on {jax.default_backend()}", flush=True)
    glorot, zeros = jax.nn.initializers.glorot_uniform(), jax.nn.initializers.zeros

    def ready(out: Any) -> Any:
        return jax.block_until_ready(out)

    for label, build in flax_models(quick).items():
        model, model2 = build(), build()
        ours = pp_rows(lambda model=model: pp.tree(model), model, model2, folder, lambda: None)
        numpy_state = jax.tree.map(np.array, nnx.state(model))   # copies: not the model's own arrays
        native_file = os.path.join(folder, "native.safetensors")

        def flat(model: Any) -> list:
            return list(nnx.to_flat_state(nnx.state(model)))

        def native_read(model: Any = model) -> dict:
            return {".".join(map(str, k)): np.asarray(v.get_value()) for k, v in flat(model)}

        def native_write(values: Any, model: Any = model) -> None:   # NumPy values into JAX arrays, as a load makes
            nnx.update(model, ready(jax.tree.map(jnp.array, values)))

        def native_init(model: Any = model) -> None:
            key = jax.random.key(0)
            for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)):
                key, sub = jax.random.split(key)
                value = v.get_value()
                v.set_value((glorot if value.ndim >= 2 else zeros)(sub, value.shape, value.dtype))
            ready(nnx.state(model))

        def native_save(model: Any = model, native_file: str = native_file) -> None:
            save_file(native_read(model), native_file)
            fsync_file(native_file)

        def native_load(model: Any = model, native_file: str = native_file) -> None:
            loaded = load_file(native_file)
            state = nnx.state(model)
            native_write(nnx.from_flat_state([(k, v.replace(loaded[".".join(map(str, k))]))
                                              for k, v in nnx.to_flat_state(state)]), model)

        native_save()
        native = {"tree+items": lambda model=model: flat(model),
                  "state": native_read,
                  "load_state": lambda numpy_state=numpy_state: native_write(numpy_state),
                  "initialize": native_init,
                  "save": native_save,
                  "load": native_load,
                  "transfer": lambda model=model, model2=model2: nnx.update(model2, nnx.state(model))}
        # JAX arrays are immutable: the native write replaces them and the old ones are the undo record, so the
        # native way with polyparam's guarantee is the native way itself, except for transfer: nnx.update shares
        # the source's arrays, polyparam's transfer copies them (a buffer donated to a jitted step in one model
        # must not delete the other's), so its floor is the native update of copies
        floors = {"save": atomically(native_save, native_file),
                  "transfer": lambda model=model, model2=model2: nnx.update(
                      model2, ready(jax.tree.map(jnp.copy, nnx.state(model))))}
        variables = flat(model)
        run_rows(label, len(variables), sum(int(v.get_value().size) for _, v in variables),
                 [(k, ours[k], native[k]) for k in ours], repeat, floors, {"transfer": "native of copies"})


# ---------------------------------------------------------------- scale curve

def curve_model(backend: str, count: int, total: int) -> tuple[Any, Callable[[], Any], Callable[[Any], Any]]:
    """A model of ``count`` tensors (Dense/Linear weight + bias pairs) of about ``total`` values in all,
    with the native read and write of its values."""
    layers = count // 2
    width = max(1, int((total / layers) ** 0.5))
    if backend == "torch":
        import torch

        model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
        named = dict(model.named_parameters())

        def copy_in(values: dict) -> None:   # load_state_dict's own copies (it is quadratic in the modules)
            with torch.no_grad():
                for k, v in values.items():
                    named[k].copy_(torch.from_numpy(v))

        return model, lambda: {k: v.numpy() for k, v in model.state_dict().items()}, copy_in
    if backend == "keras":
        import keras

        inputs = keras.Input((width,))   # side by side: a chain of 5,000 layers exceeds Keras' recursion limit
        model = keras.Model(inputs, [keras.layers.Dense(width)(inputs) for _ in range(layers)])
        return model, model.get_weights, model.set_weights
    if backend == "mxnet":
        mx = import_mxnet()
        from mxnet.gluon import nn

        net = nn.Sequential()
        for _ in range(layers):
            net.add(nn.Dense(width, in_units=width))
        net.initialize()
        mx.nd.waitall()
        params = list(net.collect_params().values())

        def write(values: list) -> None:
            for p, v in zip(params, values):
                p.set_data(mx.nd.array(v, dtype=v.dtype))
            mx.nd.waitall()

        return net, lambda: [p.data().asnumpy() for p in params], write
    if backend == "flax":
        import jax
        import jax.numpy as jnp
        from flax import nnx

        rngs = nnx.Rngs(0)
        stack = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(layers)])

        def read_flax() -> Any:
            return [np.asarray(v.get_value()) for _, v in nnx.to_flat_state(nnx.state(stack))]

        def write_flax(values: list) -> None:
            flat = nnx.to_flat_state(nnx.state(stack))
            nnx.update(stack, nnx.from_flat_state([(k, v.replace(jnp.array(a))) for (k, v), a in zip(flat, values)]))
            jax.block_until_ready(nnx.state(stack))

        return stack, read_flax, write_flax
    model = {str(i): {"weight": np.zeros((width, width), np.float32), "bias": np.zeros(width, np.float32)}
             for i in range(layers)}

    def copy_in(values: dict) -> None:
        for k, v in values.items():
            i, name = k.split(".")
            np.copyto(model[i][name], v)

    return model, lambda: {f"{i}.{n}": a for i, layer in model.items() for n, a in layer.items()}, copy_in


def curve_point(backend: str, count: int, total: int, repeat: int) -> tuple[dict[str, float], float, float]:
    """Times of tree build + items, state() and load_state() on a model of ``count`` tensors, and the native read
    and write."""
    model, read, write = curve_model(backend, count, total)
    tree = pp.tree(model)
    state = tree.state(copy=True)
    values = read()   # copies: a write of the model's own views onto themselves would do nothing
    native_values = ({k: np.array(v) for k, v in values.items()} if isinstance(values, dict)
                     else [np.array(v) for v in values])
    times = {"tree+items": paired(lambda: pp.tree(model).items(), read, repeat)[0],
             "state": paired(tree.state, read, repeat)[0],
             "load_state": paired(lambda: tree.load_state(state), lambda: write(native_values), repeat)[0]}
    t_read, t_write = paired(read, lambda: write(native_values), repeat)
    return times, t_read, t_write


def scale_curve(backend: str, quick: bool, repeat: int) -> None:
    counts = (10, 100, 400) if quick else (10, 100, 1000, 10000)
    total = 2**18 if quick else 2**22
    print(f"-- scale curve, {backend}: {total:,} float32 values in all; ms per call (us per tensor)", flush=True)
    print(f"  {'tensors':>8} {'tree+items':>22} {'state':>22} {'load_state':>22} {'native read':>12}"
          f" {'native write':>12}", flush=True)
    points: dict[str, list[tuple[int, float]]] = {"tree+items": [], "state": [], "load_state": []}
    for count in counts:
        times, t_read, t_write = curve_point(backend, count, total, repeat)
        for name, t in times.items():
            points[name].append((count, t))
        cells = " ".join(f"{t * 1e3:10.2f} ({t / count * 1e6:7.2f})" for t in times.values())
        print(f"  {count:>8} {cells} {t_read * 1e3:12.2f} {t_write * 1e3:12.2f}", flush=True)
    for name, pts in points.items():
        ts = np.array([t for _, t in pts])   # fitted on relative errors, so the small models count
        slope, fixed = np.polyfit([c for c, _ in pts], ts, 1, w=1 / ts)
        print(f"  {name:<11} per tensor {slope * 1e6:7.2f} us, fixed per call {fixed * 1e3:7.3f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller models (smoke run, about a minute)")
    parser.add_argument("--backend", choices=["torch", "keras", "mxnet", "flax", "numpy"], action="append",
                        help="only this backend (repeatable); default: every one installed")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--no-curve", action="store_true", help="skip the scale curve")
    parser.add_argument("--no-zoo", action="store_true", help="only the scale curve")
    args = parser.parse_args()
    repeat = args.repeat or (2 if args.quick else 5)
    backends = args.backend or ["torch", "keras", "mxnet", "flax", "numpy"]
    benches = {"torch": bench_torch, "keras": bench_keras, "mxnet": bench_mxnet, "flax": bench_flax}
    with tempfile.TemporaryDirectory() as folder:
        for backend in backends:
            try:
                __import__(backend if backend != "numpy" else "numpy")
            except ImportError:
                print(f"== {backend}: not installed, skipped", flush=True)
                continue
            if backend in benches and not args.no_zoo:
                benches[backend](args.quick, repeat, folder)
            if not args.no_curve:
                scale_curve(backend, args.quick, repeat)


if __name__ == "__main__":
    main()
