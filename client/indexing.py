"""Index a folder: every image under it into a search collection, under its relative path as id, resumably.

Progress is journalled in a JSON-lines file (one line per image, written and
fsynced after each chunk), so an interrupted job re-run with the same command
sends only what was not answered: images indexed or refused (a bad file) are
skipped, images the cluster could not take (UNAVAILABLE) are sent again. To
bring a collection up to date with a folder that changed, ``again`` looks at
every image anew: images of at least ``digest_first_min_bytes`` go as their
digest first, so one the collection holds as it is costs a digest and a small
message, and only new or changed files send their bytes. Needs the ``batch``
extra for the progress bar (tqdm).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ringserve.client.batch import find_images
from ringserve.client.errors import RingserveError, Unavailable
from ringserve.client.search import Indexed
from ringserve.client.sync import Client
from ringserve.contract import arguments


@dataclass(frozen=True)
class IndexJobConfig:
    root: Path
    collection: str
    # The journal of answered images; re-running with the same journal resumes.
    journal: Path
    # Images per stream and per journal flush: the unit of progress that survives an interrupt.
    chunk: int = 256
    model: str | None = None
    # Look at every image again, the journal's answers set aside (it is started anew): an image indexed as it is
    # costs its digest (digest-first), a new or changed file is sent.
    again: bool = False


@dataclass
class IndexSummary:
    found: int = 0
    skipped: int = 0
    indexed: int = 0
    refused: int = 0
    retry_later: int = 0
    seconds: float = 0.0


def answered(journal: Path) -> set[str]:
    """Ids the journal says were indexed or refused (not those to try again)."""
    if not journal.exists():
        return set()
    done = set()
    for line in journal.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            if entry["ok"] or not entry.get("retry", False):
                done.add(entry["id"])
    return done


def run(client: Client, config: IndexJobConfig, progress: bool = True) -> IndexSummary:
    """Index every image under ``config.root`` not yet answered; returns what happened."""
    from tqdm import tqdm

    started = time.perf_counter()
    found = find_images(config.root)
    done = set() if config.again else answered(config.journal)
    todo = [p for p in found if p not in done]
    summary = IndexSummary(found=len(found), skipped=len(found) - len(todo))
    config.journal.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(found), initial=summary.skipped, unit="img", disable=not progress, file=sys.stderr,
               desc=f"index {config.collection}", smoothing=0.1)
    try:
        with open(config.journal, "w" if config.again else "a") as journal:
            for i in range(0, len(todo), config.chunk):
                chunk = todo[i : i + config.chunk]
                lines = []
                readable, payloads = [], []
                for path in chunk:
                    try:
                        arguments.check_id(path)  # a path too long to be an id is refused alone, not the call
                        payloads.append((config.root / path).read_bytes())
                        readable.append(path)
                    except arguments.InvalidArgument as exc:
                        summary.refused += 1
                        lines.append({"id": path, "ok": False, "error": f"{exc}: rename or move the file"})
                    except OSError as exc:
                        summary.refused += 1
                        lines.append({"id": path, "ok": False, "error": f"unreadable: {exc}"})
                results = client.index(readable, payloads, config.collection, config.model) if readable else []
                for path, result in zip(readable, results, strict=True):
                    if isinstance(result, Indexed):
                        summary.indexed += 1
                        lines.append({"id": path, "ok": True, "model_version": result.model_version})
                    else:
                        retry = isinstance(result, Unavailable)
                        summary.retry_later += retry
                        summary.refused += not retry
                        lines.append({"id": path, "ok": False, "retry": retry, "error": _reason(result)})
                journal.write("".join(json.dumps(line) + "\n" for line in lines))
                journal.flush()
                os.fsync(journal.fileno())
                bar.update(len(chunk))
                bar.set_postfix(refused=summary.refused, retry=summary.retry_later)
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - started
    return summary


def _reason(error: RingserveError | Exception) -> str:
    return f"{error.code.name}: {error.message}" if isinstance(error, RingserveError) else str(error)
