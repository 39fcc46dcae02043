"""``ringserve``: extract features, classify, and index and search collections from the command line.

``extract`` and ``classify`` print one JSON line per image, in the order given;
``--out features.npz`` also saves the vectors, keyed by file name. ``index``,
``search`` and ``delete`` work on a router's search collections. Exit status 1
if any image failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np

from ringserve.client import status
from ringserve.client.config import ClientConfig
from ringserve.client.errors import InvalidArgument, RingserveError
from ringserve.client.sync import Client
from ringserve.contract import arguments
from ringserve.contract.flags import Flags


class _Parser(argparse.ArgumentParser):
    """A bad argument is one line naming it and what it may be, and exit status 2: no usage dump, no traceback."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _count(name: str, lowest: int, highest: int | None = None, unit: str = "") -> Callable[[str], int]:
    """An argparse type: an integer in the range ``contract.arguments`` allows, else a message naming both."""
    def parse(text: str) -> int:
        try:
            value: object = int(text)
        except ValueError:
            value = text
        try:
            arguments.check_count(name, value, lowest, highest, unit)
        except arguments.InvalidArgument as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return int(text)

    return parse


# Old spellings of the shared flags, still read (with a warning) so that scripts written for them keep working.
RENAMED = {"--timeout": "--timeout-s", "--cache": "--cache-mode", "--no-hint": "--no-hints"}
# The flags every subcommand shares: ClientConfig's fields, each also RINGSERVE_CLIENT_<FLAG> in the environment:
# a prefix of its own, so that a shell's client settings never reach a node started from it, nor a node pod's
# settings the command run inside it. RINGSERVE_TARGET, the client's one variable before, still sets --target.
CLIENT_FLAGS = Flags(ClientConfig, "RINGSERVE_CLIENT_", "connection and call", RENAMED)
TARGET_VARIABLE = "RINGSERVE_TARGET"


def client_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with RINGSERVE_TARGET read as RINGSERVE_CLIENT_TARGET where that is unset."""
    found = dict(environ)
    if TARGET_VARIABLE in found:
        found.setdefault("RINGSERVE_CLIENT_TARGET", found[TARGET_VARIABLE])
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ringserve",
        description="Send images to a ringserve router or node. Each subcommand's shared flags (--target, "
        "--timeout-s, ...) can also be set as RINGSERVE_CLIENT_<FLAG> in the environment (--target also as "
        "RINGSERVE_TARGET); the command line wins.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_extract, _classify, _batch_args, _index_args, _search_args, _delete_args, status.add_parser):
        CLIENT_FLAGS.add_to(add(sub))
    CLIENT_FLAGS.add_to(sub.add_parser("models", help="list the models served"))
    return parser


def _extract(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    ex = sub.add_parser("extract", help="feature vectors", description="Print one JSON line per image.")
    ex.add_argument("files", nargs="+", type=Path)
    ex.add_argument("--out", type=Path, help="save vectors to this .npz, keyed by file path")
    ex.add_argument("--print-vector", action="store_true", help="include the whole vector in each JSON line")
    return ex


def _classify(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    cl = sub.add_parser("classify", help="top-k classes", description="Print one JSON line per image.")
    cl.add_argument("files", nargs="+", type=Path)
    cl.add_argument("--top-k", type=_count("top_k", 1), default=5)
    return cl


def _batch_args(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    bt = sub.add_parser("batch", help="every image under a folder into a resumable Parquet dataset",
                        description="Walk DIR, send every image (bounded window), write features or classes to "
                        "OUT (a folder of Parquet parts, keyed by relative path). Re-run to resume: finished "
                        "images are skipped. Bad files become rows with their reason. Needs ringserve[batch].")
    bt.add_argument("root", type=Path, metavar="DIR")
    bt.add_argument("--out", type=Path, required=True, help="output folder (Parquet dataset)")
    bt.add_argument("--classify", action="store_true", help="write top-k classes instead of features")
    bt.add_argument("--top-k", type=_count("top_k", 1), default=5)
    bt.add_argument("--chunk", type=_count("chunk", 1), default=256, help="images per stream and per part file")
    bt.add_argument("--no-progress", action="store_true")
    return bt


def _index_args(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    ix = sub.add_parser("index", help="every image under a folder into a search collection, resumably",
                        description="Walk DIR and index every image under its path relative to DIR as id, in "
                        "COLLECTION (made by the first image; an id indexed again is replaced). Progress is kept in "
                        "a journal: re-run the same command to resume; with --again, to take in what changed in DIR. "
                        "Needs ringserve[batch] for the progress bar.")
    ix.add_argument("root", type=Path, metavar="DIR")
    ix.add_argument("--collection", required=True, help="collection name: [A-Za-z0-9_.-], 1 to 128 characters")
    ix.add_argument("--journal", type=Path, default=None,
                    help="progress journal (default: ./.ringserve-index-COLLECTION.jsonl)")
    ix.add_argument("--chunk", type=_count("chunk", 1), default=256, help="images per stream and per journal write")
    ix.add_argument("--again", action="store_true",
                    help="look at every image again, the journal's answers set aside (it is started anew), to bring "
                    "the collection up to date with a changed folder: an image it holds as it is costs only its "
                    "digest (images of at least --digest-first-min-bytes), new and changed files are sent")
    ix.add_argument("--no-progress", action="store_true")
    return ix


def _search_args(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    se = sub.add_parser("search", help="the nearest entries and near-duplicates of an image or an indexed id",
                        description="Print one JSON line per hit: nearest entries by feature (cosine), then, with "
                        "--max-distance, entries whose pHash is within that many bits (near-duplicates).")
    query = se.add_mutually_exclusive_group(required=True)
    query.add_argument("image", type=Path, nargs="?", help="the query image")
    query.add_argument("--id", help="search with an entry already indexed, by its id")
    se.add_argument("--collection", required=True)
    se.add_argument("-k", type=_count("k", 0), default=10, help="nearest entries to return (0: none)")
    se.add_argument("--max-distance", type=_count("max_distance", 0, arguments.MAX_DISTANCE, " bits"), default=None,
                    help=f"also near-duplicates within this many bits (0 to {arguments.MAX_DISTANCE})")
    return se


def _delete_args(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    de = sub.add_parser("delete", help="remove ids from a collection, or the whole collection",
                        description="Remove the given ids (a deleted id never comes back unless indexed again), "
                        "or with --all the whole collection, to re-index it under a new model version.")
    de.add_argument("ids", nargs="*")
    de.add_argument("--collection", required=True)
    de.add_argument("--all", action="store_true", help="remove the whole collection")
    return de


def _provenance(p) -> dict:
    return {"source": p.source, "node": p.node, "model": p.model, "model_version": p.model_version,
            "perceptual": p.perceptual, "distance": p.distance}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(CLIENT_FLAGS.upgrade(sys.argv[1:] if argv is None else argv, parser.prog))
    try:
        return _run(a, CLIENT_FLAGS.read(parser, a, client_environment(os.environ)))
    except InvalidArgument as exc:  # checked by the client before any call: the caller's to fix
        print(f"ringserve {a.command}: {exc.message}", file=sys.stderr)
        return 2


def _run(a: argparse.Namespace, config: ClientConfig) -> int:
    if a.command == "models":
        with Client(config=config) as c:
            info = c.list_models()
        for m in info.models:
            print(json.dumps({"name": m.name, "version": m.version, "feature_dim": m.feature_dim, "dtype": m.dtype,
                              "num_classes": m.num_classes, "input_size": m.input_size,
                              "random_weights": m.random_weights, "default": m.name == info.default_model}))
        return 0
    if a.command == "batch":
        return _batch(a, config)
    if a.command == "status":
        return status.run(a, config)
    if a.command in ("index", "search", "delete"):
        return _search_commands(a, config)
    missing = [str(f) for f in a.files if not f.is_file()]
    if missing:
        print(f"ringserve: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    failed = 0
    vectors: dict[str, np.ndarray] = {}
    with Client(config=config) as c:
        if a.command == "extract":
            results = c.extract_detailed(a.files)
        else:
            results = c.classify_detailed(a.files, top_k=a.top_k)
    for path, result in zip(a.files, results, strict=True):
        line: dict = {"file": str(path)}
        if isinstance(result, RingserveError):
            failed += 1
            line.update(ok=False, code=result.code.name, error=result.message)
        elif a.command == "extract":
            vectors[str(path)] = result.vector
            line.update(ok=True, dim=int(result.vector.shape[0]), dtype=result.vector.dtype.name,
                        **_provenance(result.provenance))
            if a.print_vector:
                line["vector"] = [float(x) for x in result.vector]
        else:
            line.update(ok=True, classes=[{"index": int(i), "name": n, "score": round(float(s), 5)}
                                          for i, n, s in zip(result.indices, result.names, result.scores, strict=True)],
                        **_provenance(result.provenance))
        print(json.dumps(line))
    if a.command == "extract" and a.out is not None:
        np.savez(a.out, **vectors)
        print(f"saved {len(vectors)} vectors to {a.out}", file=sys.stderr)
    return 1 if failed else 0


def _batch(a: argparse.Namespace, config: ClientConfig) -> int:
    try:
        from ringserve.client import batch
    except ImportError as exc:
        print(f"ringserve batch needs pyarrow and tqdm: pip install 'ringserve[batch]' ({exc})", file=sys.stderr)
        return 2
    if not a.root.is_dir():
        print(f"ringserve: {a.root} is not a folder", file=sys.stderr)
        return 2
    job = batch.BatchConfig(root=a.root, out=a.out, kind="classify" if a.classify else "extract",
                            top_k=a.top_k, chunk=a.chunk)
    try:
        with Client(config=config) as c:
            s = batch.run(c, job, progress=not a.no_progress)
    except KeyboardInterrupt:
        print(f"interrupted: finished parts are kept in {a.out}; run the same command again to resume",
              file=sys.stderr)
        return 130
    rate = s.done / s.seconds if s.seconds else 0.0
    print(f"{s.found} images: {s.done} done now ({rate:.1f}/s), {s.skipped} already done, {s.errors} failed "
          f"(rows with ok=false and the reason in {a.out})", file=sys.stderr)
    return 0


def _search_commands(a: argparse.Namespace, config: ClientConfig) -> int:
    try:
        with Client(config=config) as c:
            if a.command == "index":
                return _index(a, c)
            if a.command == "delete":
                if bool(a.ids) == a.all:
                    print("ringserve delete: give ids, or --all for the whole collection", file=sys.stderr)
                    return 2
                deleted, missing = c.delete(a.collection, a.ids, everything=a.all)
                print(json.dumps({"collection": a.collection, "deleted": deleted, "missing": missing}))
                return 0
            if a.image is not None and not a.image.is_file():
                print(f"ringserve: no such file: {a.image}", file=sys.stderr)
                return 2
            found = c.search(a.collection, image=a.image, id=a.id, k=a.k, max_distance=a.max_distance)
    except InvalidArgument:
        raise  # main's: exit status 2
    except RingserveError as exc:
        print(f"ringserve {a.command}: {exc}", file=sys.stderr)
        return 1
    for kind, hits in (("nearest", found.nearest), ("duplicate", found.duplicates)):
        for rank, h in enumerate(hits, 1):
            print(json.dumps({"kind": kind, "rank": rank, "id": h.id, "score": round(h.score, 5),
                              "distance": h.distance, "model_version": found.model_version,
                              "stale_ms": found.stale_ms}))
    if found.query_low_information and a.max_distance is not None:
        print("ringserve search: no near-duplicates listed: the query image has too little structure (a flat colour, "
              "a gradient, a near-empty page) for its pHash to tell it from unrelated images", file=sys.stderr)
    return 0


def _index(a: argparse.Namespace, c: Client) -> int:
    try:
        from ringserve.client import indexing
    except ImportError as exc:
        print(f"ringserve index needs tqdm: pip install 'ringserve[batch]' ({exc})", file=sys.stderr)
        return 2
    if not a.root.is_dir():
        print(f"ringserve: {a.root} is not a folder", file=sys.stderr)
        return 2
    journal = a.journal or Path(f".ringserve-index-{a.collection}.jsonl")
    job = indexing.IndexJobConfig(root=a.root, collection=a.collection, journal=journal, chunk=a.chunk,
                                  model=c.config.model or None, again=a.again)
    try:
        s = indexing.run(c, job, progress=not a.no_progress)
    except KeyboardInterrupt:
        same = "the same command without --again" if a.again else "the same command again"
        print(f"interrupted: progress is in {journal}; run {same} to resume", file=sys.stderr)
        return 130
    rate = s.indexed / s.seconds if s.seconds else 0.0
    print(f"{s.found} images: {s.indexed} indexed now ({rate:.1f}/s), {s.skipped} already answered, "
          f"{s.refused} refused (reasons in {journal}), {s.retry_later} to send again (re-run to resume)",
          file=sys.stderr)
    return 1 if s.retry_later else 0


if __name__ == "__main__":
    sys.exit(main())
