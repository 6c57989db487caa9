"""The ``polyparam`` command: ``tour`` (the chapter, live), ``plugins``, ``inspect`` and ``convert``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="polyparam", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tour = sub.add_parser("tour", help="walk the Parameter Management chapter on a backend")
    tour.add_argument("--backend", default="numpy", help="numpy, torch, keras, mxnet, or all (default: numpy)")
    sub.add_parser("plugins", help="list installed plugins, their backends, versions and load errors "
                                   "(exit status 1 when any failed)")
    inspect = sub.add_parser("inspect", help="the tensors, ties and totals inside a checkpoint file")
    inspect.add_argument("file", help=".safetensors, .npz, .pt/.pth, .params (MXNet) or .weights.h5 (Keras)")
    convert = sub.add_parser("convert", help="copy a checkpoint into .safetensors or .npz, keeping ties")
    convert.add_argument("src", help="any file `polyparam inspect` reads")
    convert.add_argument("dst", help="a .safetensors or .npz path (written atomically)")
    convert.add_argument("--strip-prefix", help="remove this prefix from the keys that have it (e.g. 'module.')")
    convert.add_argument("--add-prefix", help="put this prefix before every key")
    convert.add_argument("--rename", action="append", default=[], metavar="REGEX=REPLACEMENT",
                         help="re.sub rule applied to every key, in the order given (repeatable); "
                              "split at the last '='")
    compare = sub.add_parser("diff", help="compare two checkpoint files tensor by tensor "
                                          "(exit status 0 when equal, 1 when not)")
    compare.add_argument("a", help="any file `polyparam inspect` reads")
    compare.add_argument("b", help="any file `polyparam inspect` reads")
    args = parser.parse_args(argv)
    from polyparam.errors import PolyparamError

    try:
        if args.command == "tour":
            return _tour_command(args.backend)
        if args.command == "inspect":
            return _inspect_command(args.file)
        if args.command == "convert":
            return _convert_command(args.src, args.dst, rename=args.rename, strip_prefix=args.strip_prefix,
                                    add_prefix=args.add_prefix)
        if args.command == "diff":
            return _diff_command(args.a, args.b)
        return _plugins_command()
    except (PolyparamError, OSError) as exc:
        from polyparam._display import visible

        print(f"polyparam: error: {visible(exc)}", file=sys.stderr)
        return 2


# ---- inspect and convert ---------------------------------------------------------


def _inspect_command(file: str) -> int:
    from rich.console import Console
    from rich.table import Table

    from polyparam._display import literal
    from polyparam._params.parameter import format_shape
    from polyparam._params.tree import _human_bytes
    from polyparam.checkpoint.formats import open_archive

    with open_archive(file) as archive:
        meta = archive.metadata
        tied_with: dict[str, list[str]] = {}
        for group in meta.ties:
            for path in group:
                tied_with[path] = [q for q in group if q != path]
        title = f"{file} ({archive.format}, layout {meta.layout}"
        title += f", saved from {meta.backend})" if meta.backend else ")"
        table = Table(title=literal(title), title_justify="left")
        for column in ("path", "shape", "dtype", "bytes", "tied with"):
            justify: Literal["left", "right"] = "right" if column in ("shape", "bytes") else "left"
            table.add_column(column, justify=justify, no_wrap=column == "path")
        scalars = nbytes = 0
        for key, entry in archive.entries.items():
            _add_literal_row(table, key, format_shape(entry.shape), entry.dtype.name, f"{entry.nbytes:,}",
                             ", ".join(tied_with.get(key, [])))
            scalars += entry.nbytes // max(entry.dtype.itemsize, 1)
            nbytes += entry.nbytes
        for path, others in tied_with.items():
            if path not in archive.entries:
                anchor = archive.paths()[path]
                entry = archive.entries[anchor]
                _add_literal_row(table, path, format_shape(entry.shape), entry.dtype.name, "(alias)", ", ".join(others))
        table.caption = literal(f"{len(archive.entries)} tensors, {scalars:,} scalars, {_human_bytes(nbytes)}; "
                                f"{len(meta.ties)} tie groups" + ("; checksums recorded" if meta.checksums else ""))
        table.caption_justify = "left"
        Console(width=160).print(table)
    return 0


def _add_literal_row(table: Table, *cells: object) -> None:
    """One row whose cells are shown as they are (see :mod:`polyparam._display`)."""
    from polyparam._display import literal

    table.add_row(*[literal(cell) for cell in cells])


def _convert_command(src: str, dst: str, *, rename: Sequence[str] = (), strip_prefix: str | None = None,
                     add_prefix: str | None = None) -> int:
    from polyparam._display import visible
    from polyparam.checkpoint.single import convert
    from polyparam.errors import InvalidArgumentError

    rules = []
    for rule in rename:
        pattern, sep, replacement = rule.rpartition("=")   # the regex may hold '=' ((?=...)), the replacement not
        if not sep:
            msg = f"Invalid --rename {rule!r}: expected REGEX=REPLACEMENT, e.g. --rename '^module\\.='."
            raise InvalidArgumentError(msg, argument="rename", expected="REGEX=REPLACEMENT", got=rule)
        rules.append((pattern, replacement))
    meta = convert(src, dst, rename=rules or None, strip_prefix=strip_prefix, add_prefix=add_prefix)
    print(visible(f"wrote {dst} ({len(meta.checksums)} tensors, {len(meta.ties)} tie groups, layout {meta.layout})"))
    return 0


def _diff_command(a: str, b: str) -> int:
    from polyparam._diff import diff
    from polyparam._display import visible

    result = diff(a, b)
    for line in str(result).splitlines():
        print(visible(line))
    return 0 if result.equal else 1


# ---- plugins ---------------------------------------------------------------------


def _probe(name: str) -> tuple[str | None, str | None]:
    """Load backend ``name`` in a child process: a framework that crashes cannot take the CLI down."""
    code = ("import sys, polyparam; b = polyparam.get_backend(sys.argv[1]); print(b.framework_version())")
    try:
        done = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return None, "loading timed out after 300 s"
    if done.returncode == 0:
        return done.stdout.strip().splitlines()[-1], None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    reason = lines[-1] if lines else f"exited with code {done.returncode}"
    if done.returncode < 0:
        reason = f"crashed with signal {-done.returncode} while loading. {reason}"
    return None, reason


def _plugins_command() -> int:
    """One row per backend of each plugin, and one for a plugin that provides none; 1 when any row is an error."""
    from rich.console import Console
    from rich.table import Table

    from polyparam._display import literal
    from polyparam._manager import backend_owners, plugin_statuses

    table = Table(title="polyparam plugins", title_justify="left")
    for column in ("plugin", "distribution", "backend", "framework version", "status"):
        table.add_column(column)
    statuses = plugin_statuses()
    by_name = {status.name: status for status in statuses}
    owners = backend_owners()
    failures = 0
    for status in statuses:
        distribution = status.distribution or ""
        if status.error:
            failures += 1
            _add_literal_row(table, status.name, distribution, ", ".join(status.backends) or "-", "-",
                             f"error: {status.error}")
            continue
        if not status.backends:
            _add_literal_row(table, status.name, distribution, "-", "-", "ok, no backend")
            continue
        for backend in status.backends:
            owner = owners.get(backend, status.name)
            if owner != status.name:
                by = by_name[owner].distribution if owner in by_name else None
                _add_literal_row(table, status.name, distribution, backend, "-",
                                 f"overridden by {owner}" + (f" ({by})" if by else ""))
                continue
            version, error = _probe(backend)
            failures += error is not None
            note = "ok" if error is None else f"error: {error}"
            if error is None and backend in status.overrides:
                note = f"ok, overrides the built-in {backend}"
            _add_literal_row(table, status.name, distribution, backend, version or "-", note)
    table.caption = literal(f"{len(statuses)} plugins, {failures} errors")
    table.caption_justify = "left"
    Console(width=160).print(table)
    return 1 if failures else 0


# ---- tour ------------------------------------------------------------------------


def _tour_command(backend: str) -> int:
    if backend == "all":
        from polyparam import list_backends

        code = 0
        for name in list_backends():
            version, error = _probe(name)
            if version is None:   # its framework is not installed here (or fails to import): say so, go on
                print(f"\n(backend {name}: not available here: {error})", flush=True)
                continue
            print(f"\n{'#' * 30} backend: {name} {'#' * 30}", flush=True)
            # One process per backend: frameworks are isolated from each other.
            code |= subprocess.call([sys.executable, "-m", "polyparam", "tour", "--backend", name])
        return code
    Tour(backend).run()
    return 0


class Tour:
    """The chapter "Parameter Management", step by step, through polyparam.

    Each statement is printed as typed at the Python prompt (``>>>``, ``...`` for continuation lines)
    and run at once, so what it prints follows it, as in a console session.
    """

    def __init__(self, backend: str) -> None:
        import polyparam as pp

        self.pp = pp
        self.backend = pp.get_backend(backend)
        self.models = self.backend.models()
        self.x = np.random.default_rng(0).uniform(size=(2, 4)).astype(np.float32)
        np.set_printoptions(precision=6, suppress=False)

    def step(self, title: str) -> None:
        """Start a section of the chapter."""
        print(f"\n## {title}\n")

    def say(self, code: str) -> None:
        """Print one statement as typed at the prompt; the caller runs it right after, so its output follows."""
        first, *rest = code.strip("\n").splitlines()
        print(f">>> {first}")
        for line in rest:
            print(f"... {line}")
        if rest:
            print("...")
        sys.stdout.flush()  # before anything the statement makes a framework write itself

    def run(self) -> None:
        """Walk every step the backend's capabilities allow."""
        pp = self.pp
        print(f"# Parameter Management, on the {self.backend.NAME} backend "
              f"({self.backend.NAME} {self.backend.framework_version()})")
        case = self.models.mlp()
        first, last = case.layers[0], case.layers[-1]

        self.step("An MLP with one hidden layer")
        self.say("tree = pp.tree(net)")
        tree = pp.tree(case.model)
        self.say("net(X)")
        print(self.models.forward(case.model, self.x))

        self.step("Parameter access")
        self.say(f"print(tree[{int(last)}])")
        print(tree[int(last)])

        self.step("Targeted parameters")
        self.say(f"p = tree['{last}.bias']")
        p = tree[f"{last}.bias"]
        self.say("type(p.native)")
        print(type(p.native))
        self.say("p")
        print(p)
        self.say("p.numpy()")
        print(p.numpy())
        self.say("p.grad()")
        print(p.grad())

        self.step("All parameters at once")
        self.say(f"[(path, p.shape) for path, p in tree[{int(first)}].items()]")
        print(*[(path, q.shape) for path, q in tree[int(first)].items()])
        self.say("[(path, p.shape) for path, p in tree.items()]")
        print(*[(path, q.shape) for path, q in tree.items()])
        self.say(f"tree.state()['{last}.bias']")
        print(tree.state()[f"{last}.bias"])
        self.say(f"tree.get('{p.native_name}').numpy()")
        print(tree.get(p.native_name).numpy())

        self.step("Collecting parameters from nested blocks")
        rg = self.models.rgnet()
        self.say("rgtree = pp.tree(rgnet)")
        rgtree = pp.tree(rg.model)
        self.say("print(rgtree)")
        print(rgtree)
        self.say("rgtree[0][1][0]['bias'].numpy()")
        print(rgtree[0][1][0]["bias"].numpy())

        self.step("Built-in initialization")
        self.say("tree.initialize(pp.init.Normal(sigma=0.01), force_reinit=True)")
        tree.initialize(pp.init.Normal(sigma=0.01), force_reinit=True)
        self.say(f"tree['{first}.weight'].numpy()[0], tree['{first}.bias'].numpy()[0]")
        print(tree[f"{first}.weight"].numpy()[0], tree[f"{first}.bias"].numpy()[0])

        self.step("All parameters to a constant")
        self.say("tree.initialize(pp.init.Constant(1), force_reinit=True)")
        tree.initialize(pp.init.Constant(1), force_reinit=True)
        self.say(f"tree['{first}.weight'].numpy()[0], tree['{first}.bias'].numpy()[0]")
        print(tree[f"{first}.weight"].numpy()[0], tree[f"{first}.bias"].numpy()[0])

        self.step("Different initializers for different blocks")
        self.say(f"tree['{first}.weight'].initialize(pp.init.Xavier(), force_reinit=True)")
        tree[f"{first}.weight"].initialize(pp.init.Xavier(), force_reinit=True)
        self.say(f"tree[{int(last)}].initialize(pp.init.Constant(42), force_reinit=True)")
        tree[int(last)].initialize(pp.init.Constant(42), force_reinit=True)
        self.say(f"tree['{first}.weight'].numpy()[0]")
        print(tree[f"{first}.weight"].numpy()[0])
        self.say(f"tree['{last}.weight'].numpy()")
        print(tree[f"{last}.weight"].numpy())

        from polyparam.init import Initializer

        class MyInit(Initializer):
            def init_weight(self, name: str, arr: np.ndarray) -> None:
                print("Init", name, arr.shape)
                arr[:] = self.rng.uniform(-10, 10, arr.shape)
                arr *= np.abs(arr) >= 5

        self.step("Custom initialization")
        self.say("class MyInit(pp.init.Initializer):\n"
                 "    def init_weight(self, name, arr):\n"
                 "        print('Init', name, arr.shape)\n"
                 "        arr[:] = self.rng.uniform(-10, 10, arr.shape)\n"
                 "        arr *= np.abs(arr) >= 5")
        self.say("tree.initialize(MyInit(), force_reinit=True, seed=0)")
        tree.initialize(MyInit(), force_reinit=True, seed=0)
        self.say(f"tree['{first}.weight'].numpy()[:2]")
        print(tree[f"{first}.weight"].numpy()[:2])

        self.step("Setting parameters directly")
        self.say(f"w = tree['{first}.weight']")
        w = tree[f"{first}.weight"]
        self.say("w.set(w.numpy() + 1)")
        w.set(w.numpy() + 1)
        self.say("w[0, 0] = 42")
        w[0, 0] = 42
        self.say("w.numpy()[0]")
        print(w.numpy()[0])

        if "deferred" in self.backend.CAPABILITIES:
            self._deferred()
        if "tying" in self.backend.CAPABILITIES:
            self._tying()

    def _deferred(self) -> None:
        pp = self.pp
        lazy = self.models.lazy()

        from polyparam.init import Initializer

        class PrintInit(Initializer):
            def init_weight(self, name: str, arr: np.ndarray) -> None:
                print("Init", name, arr.shape)
                arr[:] = self.rng.uniform(-0.07, 0.07, arr.shape)

        self.step("Deferred initialization")
        self.say("ltree = pp.tree(lazy_net)   # no input size yet")
        ltree = pp.tree(lazy.model)
        self.say("print(ltree)")
        print(ltree)
        self.say("report = ltree.initialize(PrintInit())  # prints nothing")
        report = ltree.initialize(PrintInit())
        self.say("report")
        print(report)
        x20 = np.random.default_rng(1).uniform(size=(2, lazy.in_features)).astype(np.float32)
        self.step("The first forward pass runs the initializer")
        self.say("lazy_net(X)")
        self.models.forward(lazy.model, x20)
        self.step("The second one does not")
        self.say("lazy_net(X)")
        self.models.forward(lazy.model, x20)
        self.say("print(ltree)")
        print(ltree)

    def _tying(self) -> None:
        pp = self.pp
        sh = self.models.shared()
        a, b = sh.tied[0]
        xs = np.random.default_rng(2).uniform(size=(2, sh.in_features)).astype(np.float32)
        same = f"stree['{a}.weight'].numpy()[0] == stree['{b}.weight'].numpy()[0]"

        self.step("Tied parameters")
        self.say("stree = pp.tree(net_with_shared_layer)")
        stree = pp.tree(sh.model)
        self.say("stree.ties()")
        print(stree.ties())
        self.say(same)
        print(stree[f"{a}.weight"].numpy()[0] == stree[f"{b}.weight"].numpy()[0])
        self.say(f"stree['{a}.weight'][0, 0] = 100")
        stree[f"{a}.weight"][0, 0] = 100
        self.say(same)
        print(stree[f"{a}.weight"].numpy()[0] == stree[f"{b}.weight"].numpy()[0])
        if "gradients" in self.backend.CAPABILITIES:
            self.step("Gradients of tied parameters are summed")
            self.say("# the framework's backward pass of sum(net_with_shared_layer(X))")
            self.models.backward(sh.model, xs)
            self.say(f"stree['{a}.bias'].grad()")
            print(stree[f"{a}.bias"].grad())
        self.step("Untie, and tie again after construction")
        self.say("for group in stree.ties(): group.untie()")
        for group in stree.ties():
            group.untie()
        self.say("stree.ties()")
        print(stree.ties())
        self.say(f"pp.tie(stree[{a}], stree[{b}])")
        print(pp.tie(stree[a], stree[b]))
